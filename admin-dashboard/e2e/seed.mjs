// Writes one record into a map over the TopGun WebSocket protocol, so the map shows up in
// GET /api/admin/maps. Usage: TOPGUN_URL=http://127.0.0.1:PORT node seed.mjs [mapName]
// Frames are binary MsgPack maps: AUTH_REQUIRED -> AUTH -> AUTH_ACK -> OP_BATCH -> OP_ACK.

import { createHmac } from 'node:crypto';
import { encode, decode } from '@msgpack/msgpack';
import WebSocket from 'ws';

const JWT_SECRET = process.env.TOPGUN_JWT_SECRET || 'test-e2e-secret'; // test-server's fixed secret
const TIMEOUT_MS = 10_000;

const b64url = (data) => Buffer.from(data).toString('base64url');

/** HS256 JWT with the claims the server expects ({sub, roles, exp}). */
export function signJwt(claims, secret = JWT_SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** Connects, authenticates, writes `{title}` under `key` in `mapName`, resolves on OP_ACK. */
export function seedRecord(baseUrl, mapName, key = 'k1', value = { title: 'hello' }) {
  const token = signJwt({ sub: 'e2e-seeder', roles: ['admin'], exp: Math.floor(Date.now() / 1000) + 3600 });
  const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/`);
  const send = (msg) => ws.send(encode(msg));
  return new Promise((resolve, reject) => {
    const fail = (err) => {
      clearTimeout(timer);
      ws.terminate();
      reject(err instanceof Error ? err : new Error(String(err)));
    };
    const timer = setTimeout(() => fail(new Error(`no OP_ACK within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
    ws.on('error', fail);
    ws.on('close', (code) => fail(new Error(`socket closed (${code}) before OP_ACK`)));
    ws.on('message', (data) => {
      let msg;
      try {
        msg = decode(data);
      } catch (e) {
        return fail(new Error(`undecodable frame: ${e.message}`));
      }
      switch (msg.type) {
        case 'AUTH_REQUIRED':
          send({ type: 'AUTH', token });
          break;
        case 'AUTH_ACK':
          send({
            type: 'OP_BATCH',
            payload: {
              ops: [{
                id: '1', mapName, key, opType: 'PUT',
                record: { value, timestamp: { millis: Date.now(), counter: 0, nodeId: 'e2e' } },
              }],
            },
          });
          break;
        case 'OP_ACK': {
          const failed = (msg.payload?.results || []).filter((r) => !r.success);
          if (failed.length) return fail(new Error(`op failed: ${JSON.stringify(failed)}`));
          clearTimeout(timer);
          ws.removeAllListeners('close');
          ws.close();
          resolve(msg.payload);
          break;
        }
        case 'AUTH_FAIL':
        case 'OP_REJECTED':
        case 'ERROR':
          fail(new Error(`${msg.type}: ${JSON.stringify(msg.payload ?? msg)}`));
          break;
        default:
          break; // heartbeats and other pushes are irrelevant here
      }
    });
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const base = process.env.TOPGUN_URL;
  if (!base) {
    console.error('TOPGUN_URL is not set');
    process.exit(2);
  }
  const mapName = process.argv[2] || process.env.EXPECT_MAP || 'dashboard-demo';
  seedRecord(base, mapName)
    .then((ack) => console.log(`seeded ${mapName}/k1: OP_ACK ${JSON.stringify(ack)}`))
    .catch((e) => {
      console.error(`seed failed: ${e.message}`);
      process.exit(1);
    });
}
