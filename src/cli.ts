#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { ADMIN_COMMANDS, adminUsage, parseAdminCommand, runAdminCommand } from './admin/cli.js';
import { ConfigLoadError, loadAndCompile, Tollgate } from './app.js';
import { EXPLAIN_USAGE, parseExplainCommand, runExplain } from './cli/explain.js';
import { policyJsonSchemaText } from './config/json-schema.js';
import { formatIssue } from './config/load.js';
import { parseCommand, USAGE, UsageError, type ServeSettings } from './config/settings.js';
import { createLogger, endLogs, type Logger } from './observability/logger.js';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * Stands in for the upstream when the file names none: `serve --upstream` may give it,
 * so its absence is not a problem of the file. Never connected to.
 */
const VALIDATE_UPSTREAM = 'http://127.0.0.1';

/**
 * `tollgate validate FILE`: exit 0 if `serve` would accept the file, else 1 with every
 * problem as FILE:LINE:COL message. The file is compiled too, as `serve` does (a public
 * key that cannot verify the listed algorithms passes the schema but not this).
 */
function validate(file: string): number {
  const result = loadAndCompile(file, process.env, { defaultUpstream: VALIDATE_UPSTREAM });
  if (!result.ok) {
    for (const issue of result.errors) process.stderr.write(formatIssue(issue) + '\n');
    return 1;
  }
  result.policy.identity?.close?.();
  const { loaded } = result;
  for (const warning of loaded.warnings) process.stderr.write(`${formatIssue(warning)} (warning)\n`);
  process.stdout.write(`${file}: valid (${loaded.config.routes.length} routes, sha256 ${loaded.hash.slice(0, 12)})\n`);
  return 0;
}

/** Exits once the log lines written so far are out (or could not be: see `endLogs`). */
function exitAfterLogs(logger: Logger, code: number): void {
  void endLogs(logger).then(() => process.exit(code));
}

async function serve(settings: ServeSettings): Promise<void> {
  const logger = createLogger(settings.logLevel);
  // Signals are handled from the first moment: one arriving while the store connects
  // must not kill the process with the default action.
  let tollgate: Tollgate | undefined;
  let reloadPending = false;
  let stopSignal: string | undefined;
  const stop = (signal: string): void => {
    if (stopSignal !== undefined) return;
    stopSignal = signal;
    logger.info({ event: 'signal', signal }, `received ${signal}`);
    if (tollgate === undefined) return; // start() finishes, then stops
    tollgate.shutdown().then(
      () => exitAfterLogs(logger, 0),
      (error: unknown) => {
        logger.error({ event: 'shutdown_failed', err: error }, 'shutdown failed');
        exitAfterLogs(logger, 1);
      },
    );
  };
  process.on('SIGHUP', () => {
    if (tollgate === undefined) reloadPending = true;
    else tollgate.reload('sighup');
  });
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  try {
    tollgate = await Tollgate.start({ settings, logger });
  } catch (error) {
    if (error instanceof ConfigLoadError) {
      for (const issue of error.issues) process.stderr.write(formatIssue(issue) + '\n');
    } else {
      process.stderr.write(`tollgate: ${(error as Error).message}\n`);
    }
    exitAfterLogs(logger, 1);
    return;
  }
  if (stopSignal !== undefined) {
    const signal = stopSignal;
    stopSignal = undefined;
    stop(signal);
  } else if (reloadPending) {
    tollgate.reload('sighup');
  }
}

/** `tollgate blocks|block|unblock|reset|inspect|top ...`: a client of a running Tollgate's admin API. */
async function admin(argv: readonly string[]): Promise<void> {
  let command;
  try {
    command = parseAdminCommand(argv, process.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`tollgate: ${error.message}\n\n${adminUsage(argv[0])}`);
    process.exitCode = 2;
    return;
  }
  process.exitCode = await runAdminCommand(command, process.stdout, process.stderr);
}

/** `tollgate explain METHOD URL ...`: what the policy makes of one request (src/cli/explain.ts). */
async function explain(argv: readonly string[]): Promise<void> {
  let command;
  try {
    command = parseExplainCommand(argv, process.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`tollgate: ${error.message}\n\n${EXPLAIN_USAGE}`);
    process.exitCode = 2;
    return;
  }
  process.exitCode = await runExplain(command, process.env, process.stdout, process.stderr);
}

async function main(): Promise<void> {
  if (ADMIN_COMMANDS.has(process.argv[2])) return admin(process.argv.slice(2));
  if (process.argv[2] === 'explain') return explain(process.argv.slice(3));
  let command;
  try {
    command = parseCommand(process.argv.slice(2), process.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`tollgate: ${error.message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  switch (command.command) {
    case 'help':
      process.stdout.write(USAGE);
      return;
    case 'version':
      process.stdout.write(`${version()}\n`);
      return;
    case 'validate':
      process.exitCode = validate(command.file);
      return;
    case 'schema':
      // schema/policies.schema.json, byte for byte (a test keeps the committed file equal to this).
      process.stdout.write(policyJsonSchemaText());
      return;
    case 'serve':
      await serve(command.settings);
  }
}

void main();
