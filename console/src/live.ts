import { ApiError, apiUrl, currentSession, reportSessionEnded } from './api';
import type { ControlEvent, Job, Overview } from './api-types';

/**
 * Live updates over server-sent events: one shared EventSource per stream path, opened while
 * something listens. EventSource reconnects by itself after a dropped connection; when the
 * server refuses the stream outright (the browser then gives up, e.g. on a 401), we ask
 * GET /session whether the session ended and otherwise open the stream again after a pause.
 */

export type LiveStatus = 'idle' | 'live' | 'reconnecting';

interface Subscriber {
  onData: (data: unknown) => void;
  onOpen?: () => void;
}

interface Stream {
  path: string;
  event: string;
  source: EventSource | null;
  open: boolean;
  subscribers: Set<Subscriber>;
  retry: ReturnType<typeof setTimeout> | null;
}

const RETRY_MS = 3000;
const streams = new Map<string, Stream>();
const statusListeners = new Set<(s: LiveStatus) => void>();
let lastStatus: LiveStatus = 'idle';
let latest: Overview | null = null;

function status(): LiveStatus {
  if (streams.size === 0) return 'idle';
  for (const s of streams.values()) if (!s.open) return 'reconnecting';
  return 'live';
}

function publishStatus(): void {
  const now = status();
  if (now === lastStatus) return;
  lastStatus = now;
  for (const l of statusListeners) l(now);
}

function connect(stream: Stream): void {
  const source = new EventSource(apiUrl(stream.path));
  stream.source = source;
  source.onopen = () => {
    stream.open = true;
    publishStatus();
    for (const s of stream.subscribers) s.onOpen?.();
  };
  source.addEventListener(stream.event, (e: MessageEvent<string>) => {
    let data: unknown;
    try {
      data = JSON.parse(e.data);
    } catch {
      return;
    }
    for (const s of stream.subscribers) s.onData(data);
  });
  source.onerror = () => {
    stream.open = false;
    publishStatus();
    if (source.readyState !== EventSource.CLOSED) return; // the browser retries by itself
    source.close();
    stream.source = null;
    stream.retry = setTimeout(() => {
      stream.retry = null;
      if (!streams.has(stream.path)) return;
      currentSession().then(
        () => {
          if (streams.has(stream.path) && stream.source === null) connect(stream);
        },
        (err: unknown) => {
          if (err instanceof ApiError && err.status === 401) reportSessionEnded();
          else if (streams.has(stream.path)) connect(stream);
        },
      );
    }, RETRY_MS);
  };
}

function subscribe(path: string, event: string, subscriber: Subscriber): () => void {
  let stream = streams.get(path);
  if (!stream) {
    stream = { path, event, source: null, open: false, subscribers: new Set(), retry: null };
    streams.set(path, stream);
    connect(stream);
    publishStatus();
  }
  stream.subscribers.add(subscriber);
  const s = stream;
  return () => {
    s.subscribers.delete(subscriber);
    if (s.subscribers.size > 0) return;
    // Kept a moment: a page change unsubscribes and subscribes again at once.
    setTimeout(() => {
      if (s.subscribers.size > 0 || streams.get(path) !== s) return;
      close(s);
    }, 200);
  };
}

function close(s: Stream): void {
  s.source?.close();
  if (s.retry) clearTimeout(s.retry);
  streams.delete(s.path);
  publishStatus();
}

/** Ends every stream (sign out, session ended). */
export function closeAllStreams(): void {
  for (const s of [...streams.values()]) close(s);
  latest = null;
}

export function onLiveStatus(listener: (s: LiveStatus) => void): () => void {
  statusListeners.add(listener);
  listener(status());
  return () => statusListeners.delete(listener);
}

/** The overview as the stream last sent it (null before the first one). */
export function latestOverview(): Overview | null {
  return latest;
}

/** GET /overview/stream: the whole overview at once, then on every change (at most once a second). */
export function subscribeOverview(listener: (o: Overview) => void): () => void {
  if (latest) listener(latest);
  return subscribe('/overview/stream', 'overview', {
    onData: (data) => {
      latest = data as Overview;
      listener(latest);
    },
  });
}

/** GET /jobs/stream: every job change. `onOpen`: (re)connected, so refetch what may have been missed. */
export function subscribeJobs(listener: (job: Job) => void, onOpen?: () => void): () => void {
  return subscribe('/jobs/stream', 'job', { onData: (data) => listener(data as Job), onOpen });
}

/** GET /events/stream: every new event (the server replays missed ones by Last-Event-ID). */
export function subscribeEvents(listener: (e: ControlEvent) => void): () => void {
  return subscribe('/events/stream', 'event', { onData: (data) => listener(data as ControlEvent) });
}
