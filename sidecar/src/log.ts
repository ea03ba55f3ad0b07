import pino from 'pino';

export type Logger = pino.Logger;

/** JSON logs on stdout (pino); one logger per process, children per room. */
export function createLogger(level: string, name: string): Logger {
  return pino({ level, name, base: { pid: process.pid } });
}
