/**
 * The DMQ baseline of the failover bench is the example registrar plus the
 * lines the dmq modules ask for, written at run time. Kamailio itself must
 * accept it (`kamailio -c`), with KDMQ handled before the example's routing
 * and the DMQ listener on the host's own address (the VIP moves).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { KAMAILIO_CFG } from '../lib/kamailio.ts';
import { dmqConfig, writeDmqConfig } from '../lib/kamailio-dmq.ts';

describe('the Kamailio DMQ configuration (failover bench baseline)', () => {
  it('is the example with dmq + dmq_usrloc, KDMQ handled first; Kamailio accepts it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sipha-dmq-'));
    try {
      const path = writeDmqConfig(dir, '127.0.0.1', '127.0.0.2');
      const cfg = readFileSync(path, 'utf8');
      assert.match(cfg, /modparam\("dmq", "server_address", "sip:127\.0\.0\.1:5060"\)/);
      assert.match(cfg, /modparam\("dmq", "notification_address", "sip:127\.0\.0\.2:5060"\)/);
      assert.match(cfg, /modparam\("dmq_usrloc", "enable", 1\)/);
      assert.match(cfg, /request_route \{\n\tif \(is_method\("KDMQ"\)\) \{\n\t\tdmq_handle_message\(\);/);
      assert.ok(
        cfg.includes(readFileSync(KAMAILIO_CFG, 'utf8').split('request_route {')[1] as string),
        'the example routing, whole',
      );
      const check = spawnSync('kamailio', ['-c', '-f', path], {
        encoding: 'utf8',
        env: { ...process.env, SIPHA_PUBLIC_IP: '127.0.0.1', SIPHA_CTL: `unix:${dir}/ctl` },
      });
      assert.equal(check.status, 0, check.stderr.slice(-2000));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses an example that lost the places the lines go', () => {
    assert.throws(() => dmqConfig('request_route {\n}\n', '127.0.0.1', '127.0.0.2'), /update kamailio-dmq\.ts/);
  });
});
