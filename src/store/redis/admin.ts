import type { CompiledRateLimit } from '../../policy/types.js';
import type { BlockInfo, BlockPage, KeyState, LimitCheck, StoreAdmin } from '../types.js';
import type { RedisClient } from './connection.js';
import { blockIndexKey } from './keys.js';
import { ADMIN_LUA, BLOCKS_LUA, SCRIPT_SHA1 } from './scripts.js';

export interface RedisAdminOptions {
  client: RedisClient;
  prefix: string;
  /** `clock: redis`: the scripts read TIME and answers are moved to the local clock. */
  serverClock: boolean;
  /** ms added to key TTLs (clock: local). */
  ttlSlack: number;
  /** A check's spec argument (the decide script's, see scripts.ts). */
  spec(check: LimitCheck, now: number): string;
  /** These keys' blocks changed (`lifted`: unblocked or reset): tell every replica's block cache (this one's too). */
  invalidate(keys: readonly string[], lifted: boolean): Promise<void>;
  /** This replica's id (its own top snapshot is read from memory, not from Redis). */
  replicaId: string;
}

/** Strings per check in ADMIN_LUA's reply. */
const ADMIN_STRIDE = 8;
/** A replica's top snapshot of a minute lives this long: longer than `GET /admin/top` looks back. */
const TOP_TTL_MS = 20 * 60 * 1000; // 20m

type Op = 'inspect' | 'block' | 'unblock' | 'reset';

interface OpResult {
  changed: boolean[];
  states: KeyState[];
  /** blockedUntil as the script saw it (Redis time with `clock: redis`), for comparing with index members. */
  rawUntil: number[];
}

/**
 * The admin API's store operations on Redis (StoreAdmin): one ADMIN_LUA call per route
 * (a route's keys share its hash tag, so a call is one Cluster slot), the listing from
 * the per-route index of running blocks (BLOCKS_LUA, never a SCAN), and the refusal
 * snapshots `GET /admin/top` merges across replicas (one hash per minute, a field per
 * replica). Every change is published so each replica's block cache drops the keys.
 */
export class RedisAdmin implements StoreAdmin {
  readonly #options: RedisAdminOptions;

  constructor(options: RedisAdminOptions) {
    this.#options = options;
  }

  async inspect(checks: readonly LimitCheck[], now: number): Promise<KeyState[]> {
    return (await this.#run('inspect', checks, now)).states;
  }

  async block(checks: readonly LimitCheck[], now: number, ms: number, reason: string): Promise<KeyState[]> {
    return (await this.#run('block', checks, now, ms, reason)).states;
  }

  async unblock(checks: readonly LimitCheck[], now: number): Promise<boolean[]> {
    return (await this.#run('unblock', checks, now)).changed;
  }

  async reset(checks: readonly LimitCheck[], now: number): Promise<boolean[]> {
    return (await this.#run('reset', checks, now)).changed;
  }

  async listBlocks(limits: readonly CompiledRateLimit[], after: string | null, count: number, now: number): Promise<BlockPage> {
    if (limits.length === 0) return { blocks: [], next: null };
    const { prefix, serverClock } = this.#options;
    const index = blockIndexKey(prefix, limits[0].routeId);
    const reply = (await this.#eval('blocks', BLOCKS_LUA, [index], [serverClock ? '' : now, after ?? '', count])) as string[];
    const members = reply.slice(1);
    // A member is "<until>:<prefix><limit key prefix><client key>"; one not of these limits
    // (a limit whose window or algorithm was edited since) is skipped.
    const found: { until: number; check: LimitCheck }[] = [];
    for (const member of members) {
      const key = member.slice(16);
      if (!key.startsWith(prefix)) continue;
      const storeKey = key.slice(prefix.length);
      const limit = limits.find((l) => storeKey.startsWith(l.keyPrefix));
      if (limit !== undefined) found.push({ until: Number(member.slice(0, 15)), check: { limit, key: storeKey, max: limit.limit } });
    }
    const blocks: BlockInfo[] = [];
    if (found.length > 0) {
      const { states, rawUntil } = await this.#run(
        'inspect',
        found.map((f) => f.check),
        now,
      );
      for (let i = 0; i < found.length; i++) {
        // The index may hold a member of a block that was replaced or is gone (evicted):
        // only the block the key still has counts.
        if (rawUntil[i] !== found[i].until || states[i].blockedUntil === 0) continue;
        const state = states[i];
        const limit = found[i].check.limit as CompiledRateLimit;
        blocks.push({ limit, key: found[i].check.key, until: state.blockedUntil, strike: state.strikes, manual: state.manual, reason: state.reason });
      }
    }
    return { blocks, next: members.length === count && count > 0 ? members[members.length - 1] : null };
  }

  async shareTop(minute: number, snapshot: string): Promise<void> {
    const key = this.#topKey(minute);
    await this.#options.client.multi().hset(key, this.#options.replicaId, snapshot).pexpire(key, TOP_TTL_MS).exec();
  }

  async sharedTop(minutes: readonly number[]): Promise<string[]> {
    const snapshots: string[] = [];
    const replies = await Promise.all(minutes.map((minute) => this.#options.client.hgetall(this.#topKey(minute))));
    for (const fields of replies) {
      for (const [replica, snapshot] of Object.entries(fields)) if (replica !== this.#options.replicaId) snapshots.push(snapshot);
    }
    return snapshots;
  }

  /** One hash per minute for every replica's snapshot, all in one slot (`{tollgate:top}`: no route id has a colon). */
  #topKey(minute: number): string {
    return `${this.#options.prefix}{tollgate:top}:${minute}`;
  }

  /** Runs `op` on the checks (rate checks only for changes), one script call per route. */
  async #run(op: Op, all: readonly LimitCheck[], now: number, ms = 0, reason = ''): Promise<OpResult> {
    const checks = op === 'inspect' ? all : all.filter((c) => c.limit.type === 'rate');
    const byRoute = new Map<string, number[]>();
    checks.forEach((check, i) => {
      const route = check.limit.routeId;
      const list = byRoute.get(route);
      if (list === undefined) byRoute.set(route, [i]);
      else list.push(i);
    });
    const changed: boolean[] = new Array<boolean>(checks.length).fill(false);
    const states: KeyState[] = new Array<KeyState>(checks.length);
    const rawUntil: number[] = new Array<number>(checks.length).fill(0);
    const { prefix, serverClock, ttlSlack } = this.#options;
    await Promise.all(
      [...byRoute].map(async ([route, positions]) => {
        const keys = [blockIndexKey(prefix, route)];
        const args: (string | number)[] = [op, serverClock ? '' : now, ttlSlack, op === 'block' ? ms : '', op === 'block' ? reason : ''];
        for (const i of positions) {
          const key = prefix + checks[i].key;
          keys.push(key, key + ':b', key + ':s', key + ':m');
          args.push(this.#options.spec(checks[i], now));
        }
        const reply = (await this.#eval('admin', ADMIN_LUA, keys, args)) as string[];
        if (!Array.isArray(reply) || reply.length !== 1 + ADMIN_STRIDE * positions.length) throw new Error('unexpected reply from the admin script');
        const serverNow = Number(reply[0]);
        const offset = serverClock ? now - serverNow : 0;
        positions.forEach((i, j) => {
          const b = 1 + ADMIN_STRIDE * j;
          const until = Number(reply[b + 4]);
          changed[i] = reply[b] === '1';
          rawUntil[i] = until;
          states[i] = {
            count: Number(reply[b + 1]),
            remaining: Number(reply[b + 2]),
            resetAt: Number(reply[b + 3]) + offset,
            blockedUntil: until === 0 ? 0 : until + offset,
            manual: reply[b + 5] === '1',
            strikes: Number(reply[b + 6]),
            reason: reply[b + 7],
          };
        });
      }),
    );
    if (op !== 'inspect' && checks.length > 0) await this.#options.invalidate(checks.map((c) => c.key), op !== 'block');
    if (op === 'inspect' || checks.length === all.length) return { changed, states, rawUntil };
    // Changes skip concurrency checks; answer in the caller's order, those read as they are.
    const rest = await this.#run('inspect', all, now);
    let j = 0;
    return {
      changed: all.map((c) => (c.limit.type === 'rate' ? changed[j++] : false)),
      states: rest.states,
      rawUntil: rest.rawUntil,
    };
  }

  /** EVALSHA, resent as EVAL on NOSCRIPT (as the decide call). */
  #eval(name: 'admin' | 'blocks', lua: string, keys: string[], args: (string | number)[]): Promise<unknown> {
    const client = this.#options.client;
    const all = [...keys, ...args] as string[];
    return client.evalsha(SCRIPT_SHA1[name], keys.length, all).catch((error: unknown) => {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
      return client.eval(lua, keys.length, all);
    });
  }
}
