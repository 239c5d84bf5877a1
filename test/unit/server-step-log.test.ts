/** The boot-protection test's reading of the server's step runner output (pure parsing). */
import { describe, expect, it } from 'vitest';
import { parseStepLog, stepFacts } from '../vm/bootable/server-image';

describe('parseStepLog', () => {
  it('reads the start uptime, the output and the exit code (serial CRLFs removed)', () => {
    const log = 'noise\r\nFERRY-STEP start uptime=29.85\r\n+ fact root /dev/vda1\r\nFERRY-FACT root=/dev/vda1\r\nFERRY-STEP rc=0\r\nafter\r\n';
    expect(parseStepLog(log)).toEqual({ uptimeAtStart: 29.85, rc: 0, output: '+ fact root /dev/vda1\nFERRY-FACT root=/dev/vda1\n' });
  });

  it('has no rc while the step runs and no start before the runner starts', () => {
    expect(parseStepLog('FERRY-STEP start uptime=3.5\nworking\n')).toEqual({ uptimeAtStart: 3.5, rc: null, output: 'working\n' });
    expect(parseStepLog('')).toEqual({ uptimeAtStart: null, rc: null, output: '' });
  });

  it('reads a failed step and the runner\'s own failure', () => {
    expect(parseStepLog('FERRY-STEP start uptime=1\nboom\nFERRY-STEP rc=3\n').rc).toBe(3);
    expect(parseStepLog('FERRY-STEP start uptime=1\nFERRY-STEP rc=125 (cannot mount the step disk)\n').rc).toBe(125);
  });
});

describe('stepFacts', () => {
  it('takes FERRY-FACT lines only, the last one of a key winning, values kept whole', () => {
    const facts = stepFacts('+ fact x\nFERRY-FACT root=/dev/mapper/ferry-boot-p1\nFERRY-FACT status={"a":"b=c"}\nFERRY-FACT left=\nFERRY-FACT root=/dev/vda1\n  FERRY-FACT no=indented\n');
    expect(Object.fromEntries(facts)).toEqual({ root: '/dev/vda1', status: '{"a":"b=c"}', left: '' });
  });
});
