// Writes an agent config file (what the installers used to write by hand): YAML, or JSON when the
// file name ends in .json. The text is checked by the loader (parseConfigDocument, validateAgentConfig)
// before it replaces anything.
import * as path from 'path';
import { writeFileAtomic } from '../common/fsutil';
import { AgentConfig, CaptureKind, parseConfigDocument, validateAgentConfig, VolumeConfig } from './config';
import { writeCachedDocument } from './config-cache';

/** The keys an installer sets; everything else keeps its default. */
export interface AgentConfigDocument {
  receiver: { url: string; fingerprint?: string; caFile?: string };
  name?: string;
  stateDir?: string;
  capture?: CaptureKind;
  volumes: VolumeConfig[];
}

const HEADER = '# Ferry agent configuration, written by `ferry agent configure`; see installer/README.md.\n';

/** Keys in a stable order, absent values left out (YAML and JSON alike). */
function plain(doc: AgentConfigDocument): Record<string, unknown> {
  const receiver = { url: doc.receiver.url, fingerprint: doc.receiver.fingerprint, caFile: doc.receiver.caFile };
  const volumes = doc.volumes.map((v) => ({ id: v.id, path: v.path, mount: v.mount, bootProtected: v.bootProtected }));
  return JSON.parse(JSON.stringify({ receiver, name: doc.name, stateDir: doc.stateDir, capture: doc.capture, volumes })) as Record<string, unknown>;
}

export function renderAgentConfig(doc: AgentConfigDocument, file: string): string {
  if (file.endsWith('.json')) return `${JSON.stringify(plain(doc), null, 2)}\n`;
  // Loaded here: the agent's other commands import this module and most never write YAML.
  return HEADER + (require('yaml') as typeof import('yaml')).stringify(plain(doc));
}

/** The text and the config it loads as; throws the loader's usage error when the document is refused. */
export function checkAgentConfig(doc: AgentConfigDocument, file: string): { text: string; config: AgentConfig; parsed: unknown } {
  const text = renderAgentConfig(doc, file);
  const parsed = parseConfigDocument(text, file);
  return { text, config: validateAgentConfig(parsed, file), parsed };
}

/**
 * Writes the file atomically (temp file, fsync, rename, fsync of the folder), and for YAML its
 * parsed form beside it (agent/config-cache.ts) so that the next command need not parse it.
 */
export function writeAgentConfig(doc: AgentConfigDocument, file: string, mode = 0o640): AgentConfig {
  const { text, config, parsed } = checkAgentConfig(doc, file);
  writeFileAtomic(file, text, mode);
  if (!file.endsWith('.json')) writeCachedDocument(path.resolve(file), text, parsed);
  return config;
}
