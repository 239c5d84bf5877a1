import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Server } from 'https';
import type { AuthThrottle } from '../../receiver/auth-throttle';
import type { OperatorStore } from '../operators';
import { ApiError } from './errors';
import { routeSchemas } from './schemas';

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
