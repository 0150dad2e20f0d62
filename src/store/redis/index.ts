export { createRedisStore } from './store.js';
export type { RedisStore, RedisStoreOptions } from './store.js';
export { createRedisClient, describeTarget } from './connection.js';
export type { RedisClient } from './connection.js';
export { DECIDE_LUA, HEARTBEAT_LUA, SCRIPT_SHA1 } from './scripts.js';
