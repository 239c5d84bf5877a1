// Runs the one-off lab checks of test/vm/bootable (*.check.ts), which the CI suite leaves out:
//   npx vitest run --config test/vm/bootable/vitest.check.config.mts
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/vm/bootable/*.check.ts'],
    testTimeout: 600_000,
    hookTimeout: 900_000,
  },
});
