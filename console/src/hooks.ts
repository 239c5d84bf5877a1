import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import type { Overview } from './api-types';
import { latestOverview, subscribeOverview } from './live';

export interface Loaded<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
  setData: (v: T) => void;
}

/**
 * Loads once per change of `key`, and again on reload(); a stale answer is dropped, and what was
 * loaded for another key is never shown for this one (a page reused for another id starts empty).
 */
export function useLoad<T>(load: () => Promise<T>, key: string): Loaded<T> {
  const [state, setState] = useState<{ key: string; data?: T; error?: unknown; loading: boolean }>({ key, loading: true });
  const [tick, setTick] = useState(0);
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    let live = true;
    setState((s) => (s.key === key ? { ...s, loading: true } : { key, loading: true }));
    loadRef.current().then(
      (v) => {
        if (live) setState({ key, data: v, loading: false });
      },
      (err: unknown) => {
        if (live) setState((s) => ({ key, data: s.key === key ? s.data : undefined, error: err, loading: false }));
      },
    );
    return () => {
      live = false;
    };
  }, [key, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  const setData = useCallback((v: T) => setState({ key, data: v, loading: false }), [key]);
  const current = state.key === key;
  return { data: current ? state.data : undefined, error: current ? state.error : undefined, loading: !current || state.loading, reload, setData };
}

/** The live overview (null until the stream's first message). */
export function useOverview(): Overview | null {
  const [overview, setOverview] = useState<Overview | null>(latestOverview());
  useEffect(() => subscribeOverview(setOverview), []);
  return overview;
}

/** Re-renders every `ms` (for "seen 5 s ago" texts). */
export function useNow(ms: number): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

/** Sets document.title alongside the page's h1. */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = `${title} · Ferry`;
  }, [title]);
}
