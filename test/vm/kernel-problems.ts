/**
 * Finds the lines of a kernel console log that report a kernel problem: warnings, BUGs, oopses,
 * sanitizer reports, lockdep splats, hung tasks, RCU stalls, lockups and panics.
 * A clean boot of the lab kernel matches none of these (the smoke test checks it).
 */

const PROBLEM_PATTERNS: readonly RegExp[] = [
  /\bWARNING:/, // WARN_ON(), lockdep ("WARNING: possible circular locking dependency")
  /\bBUG:/, // BUG: unable to handle page fault, sleeping in atomic, KASAN/KFENCE reports
  /kernel BUG at/,
  /\bOops\b/,
  /general protection fault/,
  /invalid opcode:/,
  /double fault/,
  /Call Trace:/,
  /\bKASAN\b/,
  /\bUBSAN\b/,
  /\bKFENCE\b/,
  /\bKCSAN\b/,
  /lockdep/i,
  /possible (circular|recursive) locking/,
  /blocked for more than \d+ seconds/, // hung task
  /\bhung[ _]task/i,
  /self-detected stall|detected stalls? on CPU|rcu_\w+ kthread starved|RCU stall/i,
  /soft lockup/,
  /hard LOCKUP/,
  /workqueue lockup/,
  /Kernel panic/,
  /list_(add|del) corruption/,
  /refcount_t: /,
  /Unable to handle kernel/,
  /stack-protector: Kernel stack is corrupted/,
  /kernel stack overflow/i,
  /page allocation failure/,
];

/** Returns the console lines (trimmed, in order) that report a kernel problem. */
export function findKernelProblems(consoleLog: string): string[] {
  const problems: string[] = [];
  for (const raw of consoleLog.split('\n')) {
    const line = raw.replace(/\r$/, '').trimEnd();
    if (PROBLEM_PATTERNS.some((re) => re.test(line))) problems.push(line);
  }
  return problems;
}
