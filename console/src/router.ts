import { useEffect, useState } from 'preact/hooks';

/** Hash routes: the server needs no fallback route. */
export type Route =
  | { page: 'overview' }
  | { page: 'machine'; id: string }
  | { page: 'groups' }
  | { page: 'group'; id: string }
  | { page: 'plans' }
  | { page: 'plan'; id: string }
  | { page: 'new-plan' }
  | { page: 'job'; id: number }
  | { page: 'events' }
  | { page: 'operators' }
  | { page: 'signin'; next: string; ended: boolean }
  | { page: 'not-found'; path: string };

/** The path part of the hash ('#/machines/a' -> '/machines/a'). */
export function currentPath(): string {
  const h = window.location.hash.replace(/^#/, '');
  return h === '' ? '/' : h;
}

export function parseRoute(path: string): Route {
  const [pathname, search = ''] = path.split('?', 2);
  const parts = pathname.split('/').filter((p) => p !== '').map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  });
  const [a, b] = parts;
  if (parts.length === 0) return { page: 'overview' };
  if (a === 'machines' && b !== undefined && parts.length === 2) return { page: 'machine', id: b };
  if (a === 'groups' && parts.length === 1) return { page: 'groups' };
  if (a === 'groups' && b !== undefined && parts.length === 2) return { page: 'group', id: b };
  if (a === 'plans' && parts.length === 1) return { page: 'plans' };
  if (a === 'plans' && b === 'new' && parts.length === 2) return { page: 'new-plan' };
  if (a === 'plans' && b !== undefined && parts.length === 2) return { page: 'plan', id: b };
  if (a === 'jobs' && b !== undefined && /^[1-9][0-9]{0,15}$/.test(b) && parts.length === 2) return { page: 'job', id: Number(b) };
  if (a === 'events' && parts.length === 1) return { page: 'events' };
  if (a === 'operators' && parts.length === 1) return { page: 'operators' };
  if (a === 'signin' && parts.length === 1) {
    const q = new URLSearchParams(search);
    const next = q.get('next') ?? '/';
    return { page: 'signin', next: next.startsWith('/') && !next.startsWith('/signin') ? next : '/', ended: q.get('ended') === '1' };
  }
  return { page: 'not-found', path: pathname };
}

export function href(path: string): string {
  return `#${path}`;
}

export const links = {
  machine: (id: string) => href(`/machines/${encodeURIComponent(id)}`),
  group: (id: string) => href(`/groups/${encodeURIComponent(id)}`),
  plan: (id: string) => href(`/plans/${encodeURIComponent(id)}`),
  job: (id: number) => href(`/jobs/${id}`),
};

export function navigate(path: string): void {
  window.location.hash = path;
}

/** The sign-in page, remembering where to come back to. */
export function signInPath(next: string, ended: boolean): string {
  const q = new URLSearchParams();
  if (next !== '/' && !next.startsWith('/signin')) q.set('next', next);
  if (ended) q.set('ended', '1');
  const s = q.toString();
  return `/signin${s === '' ? '' : `?${s}`}`;
}

export function useRoute(): { path: string; route: Route } {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const onChange = (): void => setPath(currentPath());
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return { path, route: parseRoute(path) };
}
