import { useEffect, useState } from 'preact/hooks';
import { currentSession, onSessionEnded, setCsrfToken, signOut } from './api';
import type { Session } from './api-types';
import { ErrorNote, Loading } from './components/Errors';
import { closeAllStreams, LiveStatus, onLiveStatus } from './live';
import { EventsPage } from './pages/Events';
import { GroupPage } from './pages/Group';
import { GroupsPage } from './pages/Groups';
import { JobPage } from './pages/Job';
import { MachinePage } from './pages/Machine';
import { OperatorsPage } from './pages/Operators';
import { OverviewPage } from './pages/Overview';
import { PlanPage } from './pages/Plan';
import { PlansPage } from './pages/Plans';
import { SignInPage } from './pages/SignIn';
import { currentPath, href, navigate, Route, signInPath, useRoute } from './router';

const NAV: Array<{ label: string; path: string; pages: Route['page'][] }> = [
  { label: 'Overview', path: '/', pages: ['overview', 'machine'] },
  { label: 'Groups', path: '/groups', pages: ['groups', 'group'] },
  { label: 'Recovery plans', path: '/plans', pages: ['plans', 'plan', 'new-plan', 'job'] },
  { label: 'Events', path: '/events', pages: ['events'] },
  { label: 'Operators', path: '/operators', pages: ['operators'] },
];

function LiveIndicator() {
  const [status, setStatus] = useState<LiveStatus>('idle');
  useEffect(() => onLiveStatus(setStatus), []);
  if (status === 'idle') return null;
  return (
    <span class={`live live-${status}`} role="status" data-live={status}>
      <span class="live-dot" aria-hidden="true" />
      {status === 'live' ? 'Live' : 'Reconnecting…'}
    </span>
  );
}

function Header({ session, route, onSignOut }: { session: Session | null; route: Route; onSignOut: () => void }) {
  return (
    <header class="top">
      <a class="brand" href={href('/')}>
        Ferry
      </a>
      {session && (
        <nav aria-label="Main">
          <ul>
            {NAV.map((n) => (
              <li key={n.path}>
                <a href={href(n.path)} aria-current={n.pages.includes(route.page) ? 'page' : undefined}>
                  {n.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
      )}
      <div class="top-right">
        {session && <LiveIndicator />}
        {session && (
          <>
            <span class="who">
              Signed in as <strong>{session.operator}</strong>
            </span>
            <button type="button" class="btn-small" onClick={onSignOut}>
              Sign out
            </button>
          </>
        )}
      </div>
    </header>
  );
}

function Page({ route, session }: { route: Route; session: Session }) {
  switch (route.page) {
    case 'overview':
      return <OverviewPage />;
    case 'machine':
      return <MachinePage id={route.id} />;
    case 'groups':
      return <GroupsPage />;
    case 'group':
      return <GroupPage id={route.id} />;
    case 'plans':
      return <PlansPage />;
    case 'plan':
      return <PlanPage id={route.id} />;
    case 'new-plan':
      return <PlanPage id={null} />;
    case 'job':
      return <JobPage id={route.id} />;
    case 'events':
      return <EventsPage />;
    case 'operators':
      return <OperatorsPage self={session.operator} />;
    case 'signin':
      return null;
    case 'not-found':
      return (
        <>
          <h1>Not found</h1>
          <ErrorNote>There is no page at {route.path}.</ErrorNote>
        </>
      );
  }
}

export function App() {
  const { route } = useRoute();
  /** undefined: not asked yet; null: signed out. */
  const [session, setSession] = useState<Session | null | undefined>(undefined);

  useEffect(() => {
    onSessionEnded(() => {
      setCsrfToken('');
      closeAllStreams();
      setSession(null);
      const path = currentPath();
      if (!path.startsWith('/signin')) navigate(signInPath(path, true));
    });
    currentSession().then(
      (s) => {
        setCsrfToken(s.csrfToken);
        setSession(s);
      },
      () => setSession(null),
    );
  }, []);

  // Signed out and somewhere else than the sign-in page: go there, remembering the page.
  useEffect(() => {
    // (The hash may already point at the sign-in page while the old route still renders.)
    if (session === null && route.page !== 'signin' && !currentPath().startsWith('/signin')) navigate(signInPath(currentPath(), false));
  }, [session, route.page]);

  const signedIn = (s: Session, next: string): void => {
    setCsrfToken(s.csrfToken);
    setSession(s);
    navigate(next);
  };

  const doSignOut = (): void => {
    signOut()
      .catch(() => undefined)
      .finally(() => {
        setCsrfToken('');
        closeAllStreams();
        setSession(null);
        navigate('/signin');
      });
  };

  return (
    <>
      <a class="skip" href="#main" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>
        Skip to content
      </a>
      <Header session={session ?? null} route={route} onSignOut={doSignOut} />
      <main id="main" tabIndex={-1}>
        {session === undefined ? (
          <Loading what="the console" />
        ) : route.page === 'signin' ? (
          <SignInPage next={route.next} ended={route.ended} onSignedIn={signedIn} />
        ) : session === null ? (
          <Loading what="the sign-in page" />
        ) : (
          <Page route={route} session={session} />
        )}
      </main>
    </>
  );
}
