import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['**/node_modules/**'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Real processes, loop devices and fsync-heavy I/O: keep files from competing for 2 cores.
    fileParallelism: false,
  },
});
