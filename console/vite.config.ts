import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// Run from the repository root: `vite build --config console/vite.config.ts`.
const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  root,
  // Relative asset URLs: the receiver serves the console at `/` of its management API origin.
  base: './',
  oxc: {
    jsx: { runtime: 'automatic', importSource: 'preact' },
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: true,
  },
});
