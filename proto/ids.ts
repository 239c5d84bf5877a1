import { Limits } from './limits';

const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** The id rule in words, for messages wherever an id is refused. */
export const ID_RULE = `1-${Limits.maxIdLength} letters, digits, '.', '_' or '-', starting with a letter or digit (no '..')`;

/** Volume and agent ids become directory names: allow only a conservative character set. */
export function isSafeId(id: string): boolean {
  return id.length > 0 && id.length <= Limits.maxIdLength && SAFE_ID.test(id) && !id.includes('..');
}
