import * as winston from 'winston';

const humanFormat = winston.format.combine(
  winston.format.timestamp({ format: 'HH:mm:ss.SSS' }),
  winston.format.printf((info) => {
    const { level, message, timestamp, ...rest } = info;
    const extra = Object.keys(rest).length > 0 ? ` ${JSON.stringify(rest)}` : '';
    return `${String(timestamp)} ${level} ${String(message)}${extra}`;
  }),
);

const jsonFormat = winston.format.combine(winston.format.timestamp(), winston.format.json());

/**
 * One logger for the whole process. Human-readable on a terminal, JSON lines otherwise.
 * Logs go to stderr so that command output (e.g. `--json`) on stdout stays machine-readable.
 */
export const log = winston.createLogger({
  level: process.env.FERRY_LOG_LEVEL ?? 'info',
  format: process.stdout.isTTY ? humanFormat : jsonFormat,
  transports: [
    new winston.transports.Console({
      stderrLevels: ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'],
    }),
  ],
});
