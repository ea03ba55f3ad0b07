/**
 * Optional audit of determinism (SIPHA_EGRESS_DIGEST_FILE): one line per
 * message the local server emits, with what the gate did with it and a hash
 * of its bytes as the server produced them. Comparing the master's "sent"
 * lines with the backup's "withheld" lines shows whether the backup's server
 * really produced the same replies and requests. Off by default (one branch
 * on the hot path).
 */
import { createHash } from 'node:crypto';
import { createWriteStream, type WriteStream } from 'node:fs';
import type { SipMessage } from '../sip/message.ts';

export class EgressDigest {
  private readonly out: WriteStream;

  constructor(path: string) {
    this.out = createWriteStream(path, { flags: 'a' });
  }

  record(m: SipMessage, fate: 'sent' | 'withheld'): void {
    const h = createHash('sha1').update(m.buf).digest('hex');
    this.out.write(`${fate} ${m.isRequest ? m.method : m.status} ${m.cseq} ${m.callId} ${h}\n`);
  }

  close(): void {
    this.out.end();
  }
}
