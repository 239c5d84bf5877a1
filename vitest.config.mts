import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The whole-server boot protection test takes ~40 min under TCG (three whole-disk hash
    // compares in the guest): outside `npm test` until it is fast enough for CI's 90 min.
    // FERRY_SERVER_TEST=1 runs it (see README, Limits).
    exclude: process.env.FERRY_SERVER_TEST === '1' ? ['**/node_modules/**'] : ['**/node_modules/**', 'test/vm/server-protect.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Real processes, loop devices and fsync-heavy I/O: keep files from competing for 2 cores.
    fileParallelism: false,
  },
});
