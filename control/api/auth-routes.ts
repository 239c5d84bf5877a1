import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Server } from 'https';
import type { AuthThrottle } from '../../receiver/auth-throttle';
import type { OperatorStore } from '../operators';
import { ApiError } from './errors';
import { routeSchemas } from './schemas';
import { clearedSessionCookie, csrfTokenFor, SESSION_TTL_MS, sessionCookie } from './session';

const P = '/api/v1';

interface TokenBody {
  name: string;
  password: string;
  ttlSeconds?: number;
}

interface OperatorBody {
  name: string;
  password: string;
}

function caller(request: FastifyRequest): string {
  const info = request.operatorToken;
  if (!info) throw new ApiError(401, 'unauthorized', 'a bearer token is required');
  return info.operator;
}

/** Log in (tokens), log out (revoke), and operator accounts. */
export function registerAuthRoutes(app: FastifyInstance<Server>, operators: OperatorStore, throttle: AuthThrottle, addressOf: (request: FastifyRequest) => string): void {
  app.post<{ Body: TokenBody }>(`${P}/tokens`, { config: { public: true }, schema: routeSchemas.createToken }, async (request, reply) => {
    const address = addressOf(request);
    const refusal = throttle.refusal(address, 'login');
    if (refusal) throw new ApiError(429, 'too-many-attempts', refusal);
    const { name, password, ttlSeconds } = request.body;
    if (!(await operators.verifyPassword(name, password))) {
      throttle.noteFailure(address, 'login');
      throw new ApiError(401, 'unauthorized', 'wrong operator name or password');
    }
    throttle.noteRegistered(address);
    const issued = operators.issueToken(name, ttlSeconds === undefined ? undefined : ttlSeconds * 1000);
    return reply.code(201).send(issued);
  });

  // The console's sign-in: the same check and throttle as a token, the token kept in a cookie.
  app.post<{ Body: OperatorBody }>(`${P}/session`, { config: { public: true }, schema: routeSchemas.createSession }, async (request, reply) => {
    const address = addressOf(request);
    const refusal = throttle.refusal(address, 'login');
    if (refusal) throw new ApiError(429, 'too-many-attempts', refusal);
    const { name, password } = request.body;
    if (!(await operators.verifyPassword(name, password))) {
      throttle.noteFailure(address, 'login');
      throw new ApiError(401, 'unauthorized', 'wrong operator name or password');
    }
    throttle.noteRegistered(address);
    const issued = operators.issueToken(name, SESSION_TTL_MS);
    void reply.header('Set-Cookie', sessionCookie(issued.token, SESSION_TTL_MS));
    return reply.code(201).send({ operator: name, expiresMs: issued.expiresMs ?? 0, csrfToken: csrfTokenFor(issued.token) });
  });

  app.get(`${P}/session`, { schema: routeSchemas.showSession }, async (request) => {
    const session = request.sessionToken;
    const info = request.operatorToken;
    if (session === undefined || !info) throw new ApiError(401, 'unauthorized', 'no console session: sign in (POST /api/v1/session)');
    return { operator: info.operator, expiresMs: info.expiresMs ?? 0, csrfToken: csrfTokenFor(session) };
  });

  app.delete(`${P}/session`, { schema: routeSchemas.deleteSession }, async (request, reply) => {
    const info = request.operatorToken;
    if (request.sessionToken === undefined || !info) throw new ApiError(401, 'unauthorized', 'no console session to end');
    operators.revokeToken(info.operator, info.id);
    return reply.header('Set-Cookie', clearedSessionCookie()).code(204).send();
  });

  app.get(`${P}/tokens`, { schema: routeSchemas.listTokens }, async (request) => ({ tokens: operators.tokens(caller(request)) }));

  app.delete<{ Params: { id: string } }>(`${P}/tokens/:id`, { schema: routeSchemas.revokeToken }, async (request, reply) => {
    const operator = caller(request);
    const id = request.params.id === 'current' ? (request.operatorToken?.id ?? '') : request.params.id;
    operators.revokeToken(operator, id);
    return reply.code(204).send();
  });

  app.get(`${P}/operators`, { schema: routeSchemas.listOperators }, async () => ({ operators: operators.list() }));

  app.post<{ Body: OperatorBody }>(`${P}/operators`, { schema: routeSchemas.createOperator }, async (request, reply) => {
    const created = await operators.create(request.body.name, request.body.password);
    return reply.code(201).send(created);
  });
}
