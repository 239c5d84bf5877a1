import { ControlError, ControlErrorKind } from '../contract';

/** The body of every refused call. */
export interface ErrorBody {
  error: string;
  message: string;
  field?: string;
}

export interface Refusal {
  status: number;
  body: ErrorBody;
}

/** An API-level refusal (authentication, throttling) thrown from a handler or hook. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const STATUS: Record<ControlErrorKind, number> = { invalid: 400, 'not-found': 404, conflict: 409, unavailable: 503 };

/** One entry of ajv's errors as fastify attaches them (err.validation). */
export interface ValidationIssue {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

interface ErrorLike {
  statusCode?: number;
  code?: string;
  message?: string;
  validation?: ValidationIssue[];
  validationContext?: string;
}

/** `/policy/rpoThresholdMs` -> `policy.rpoThresholdMs`; a missing or unknown property names itself. */
export function validationField(issue: ValidationIssue, context: string | undefined): string {
  const parts = issue.instancePath.split('/').filter((p) => p !== '');
  const named = issue.params.missingProperty ?? issue.params.additionalProperty;
  if (typeof named === 'string') parts.push(named);
  if (parts.length > 0) return parts.join('.');
  return context ?? 'body';
}

function validationMessage(issue: ValidationIssue, field: string): string {
  if (issue.keyword === 'additionalProperties') return `${field} is not a known field`;
  if (issue.keyword === 'required') return `${field} is required`;
  if (issue.keyword === 'minProperties') return 'give at least one field to change';
  return `${field} ${issue.message ?? 'is not valid'}`;
}

/**
 * Turns anything a handler threw into a status and a JSON body: ControlError kinds map to
 * 400/404/409/503 with the field named; schema failures are 400 naming the field; other client
 * errors keep their status; anything else is a 500 that says nothing of the internals.
 */
export function refusalFor(err: unknown): Refusal {
  if (err instanceof ApiError) return { status: err.status, body: withField({ error: err.code, message: err.message }, err.field) };
  if (isControlError(err)) return { status: STATUS[err.kind], body: withField({ error: err.kind, message: err.message }, err.field) };
  const e = (typeof err === 'object' && err !== null ? err : {}) as ErrorLike;
  if (Array.isArray(e.validation) && e.validation.length > 0) {
    const issue = e.validation[0];
    const field = validationField(issue, e.validationContext);
    return { status: 400, body: { error: 'invalid', field, message: validationMessage(issue, field) } };
  }
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    const field = e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || e.code?.startsWith('FST_ERR_CTP') ? 'body' : undefined;
    return { status: e.statusCode, body: withField({ error: e.statusCode === 404 ? 'not-found' : 'invalid', message: e.message ?? 'bad request' }, field) };
  }
  return { status: 500, body: { error: 'internal', message: 'internal error (see the receiver log)' } };
}

/** By shape as well as by class: a plane loaded from another copy of the module still maps right. */
function isControlError(err: unknown): err is ControlError {
  if (err instanceof ControlError) return true;
  const e = err as { name?: unknown; kind?: unknown; message?: unknown; field?: unknown } | null;
  return typeof e === 'object' && e !== null && e.name === 'ControlError' && typeof e.kind === 'string' && e.kind in STATUS && typeof e.message === 'string';
}

function withField(body: ErrorBody, field: string | undefined): ErrorBody {
  return field === undefined ? body : { ...body, field };
}
