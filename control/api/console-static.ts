import * as fs from 'fs';
import * as path from 'path';
import type { FastifyInstance } from 'fastify';
import type { Server } from 'https';

/** Where `npm run build` puts the console (console/dist), from dist/control/api. */
export const DEFAULT_CONSOLE_DIR = path.join(__dirname, '..', '..', '..', 'console', 'dist');

const TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.map': 'application/json',
  '.woff2': 'font/woff2',
};

/** The console talks only to its own origin; nothing may frame it. */
export const CONSOLE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Security-Policy':
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Strict-Transport-Security': 'max-age=31536000',
};

interface StaticFile {
  body: Buffer;
  type: string;
}

/** Every file of the built console, read once (a few hundred KiB), by URL path. */
function loadFiles(dir: string): Map<string, StaticFile> {
  const files = new Map<string, StaticFile>();
  const walk = (sub: string): void => {
    for (const entry of fs.readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const rel = sub === '' ? entry.name : `${sub}/${entry.name}`;
      if (entry.isDirectory()) walk(rel);
      else if (entry.isFile()) files.set(`/${rel}`, { body: fs.readFileSync(path.join(dir, rel)), type: TYPES[path.extname(entry.name)] ?? 'application/octet-stream' });
    }
  };
  walk('');
  return files;
}

/**
 * Serves the web console's static files at `/` (no token needed: they hold no data; every
 * call they make is an API call that checks the session). A receiver whose console was not
 * built answers `/` with how to build it.
 */
export function registerConsole(app: FastifyInstance<Server>, dir: string): void {
  const files = fs.existsSync(path.join(dir, 'index.html')) ? loadFiles(dir) : undefined;
  const handler = async (url: string, reply: import('fastify').FastifyReply): Promise<unknown> => {
    for (const [k, v] of Object.entries(CONSOLE_HEADERS)) void reply.header(k, v);
    if (!files) {
      return reply.code(503).type('text/plain; charset=utf-8').send(`the web console is not built on this receiver (no ${path.join(dir, 'index.html')}): run npm run build\n`);
    }
    const file = files.get(url === '/' ? '/index.html' : url);
    if (!file) return reply.code(404).type('application/json').send({ error: 'not-found', message: `no such file: ${url}` });
    // Built assets carry a content hash in their name; the page itself must be fetched fresh.
    void reply.header('Cache-Control', url.startsWith('/assets/') ? 'public, max-age=31536000, immutable' : 'no-cache');
    return reply.type(file.type).send(file.body);
  };
  app.get('/', { config: { public: true }, schema: { hide: true } }, async (_request, reply) => handler('/', reply));
  app.get('/index.html', { config: { public: true }, schema: { hide: true } }, async (_request, reply) => handler('/index.html', reply));
  app.get<{ Params: { '*': string } }>('/assets/*', { config: { public: true }, schema: { hide: true } }, async (request, reply) => handler(`/assets/${request.params['*']}`, reply));
  for (const name of files ? [...files.keys()].filter((k) => k.split('/').length === 2 && k !== '/index.html') : []) {
    app.get(name, { config: { public: true }, schema: { hide: true } }, async (_request, reply) => handler(name, reply));
  }
}
