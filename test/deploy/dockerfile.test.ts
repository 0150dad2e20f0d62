import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { after, describe, test } from 'node:test';
import { DEFAULTS, parseCommand, parseListenAddress } from '../../src/config/settings.js';
import { assignments, copyParts, execForm, isIgnored, last, parseStages, stageEnv, type Stage } from './dockerfile.js';
import { readRepoFile, repoPath, requireTool } from './support.js';

const dockerfile = readRepoFile('Dockerfile');
const dockerignore = readRepoFile('.dockerignore');
const stages = parseStages(dockerfile);
const runtime = stages[stages.length - 1] as Stage;
const runtimeEnv = stageEnv(runtime);

const scratch = mkdtempSync(join(tmpdir(), 'tollgate-dockerfile-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

function runLines(stage: Stage): string[] {
  return stage.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args);
}

describe('Dockerfile stages', () => {
  test('is multi-stage: named build stage(s) and a runtime stage, all on the pinned Node 22 bookworm-slim base', () => {
    assert.ok(stages.length >= 2, `expected >= 2 stages, found ${stages.length}`);
    for (const stage of stages) {
      assert.ok(stage.name, `FROM ${stage.image} has no AS name`);
      assert.equal(stage.image, 'node:22-bookworm-slim', `stage ${stage.name}: base image must pin the major version`);
    }
  });

  test('the build stage installs all dependencies and compiles; the runtime stage installs production ones only', () => {
    const build = stages.find((s) => runLines(s).some((r) => r.includes('npm run build')));
    assert.ok(build, 'no stage runs `npm run build`');
    assert.notEqual(build, runtime, 'the runtime stage must not compile');
    assert.ok(runLines(build).some((r) => /\bnpm ci\b/.test(r) && !r.includes('--omit=dev')), 'build stage: `npm ci` with dev dependencies');
    assert.ok(runLines(runtime).some((r) => /\bnpm ci\b.*--omit=dev/.test(r)), 'runtime stage: `npm ci --omit=dev`');
    const copiesDist = runtime.instructions
      .filter((i) => i.keyword === 'COPY')
      .map(copyParts)
      .some((c) => c.flags.get('from') === build.name && c.sources.some((s) => s.endsWith('/dist')));
    assert.ok(copiesDist, `runtime stage must COPY --from=${build.name} the compiled dist/`);
  });

  test('tini is installed from apt without recommends, apt lists are removed, and it is the exec-form ENTRYPOINT', () => {
    const install = runLines(runtime).find((r) => /apt-get install/.test(r) && /\btini\b/.test(r));
    assert.ok(install, 'runtime stage must apt-get install tini');
    assert.match(install, /--no-install-recommends/);
    assert.match(install, /rm -rf \/var\/lib\/apt\/lists/);
    const entrypoint = last(runtime, 'ENTRYPOINT');
    assert.ok(entrypoint, 'no ENTRYPOINT');
    const argv = execForm(entrypoint.args);
    assert.ok(argv, 'ENTRYPOINT must be exec form');
    assert.match(argv[0] as string, /(^|\/)tini$/);
    assert.deepEqual(argv.slice(1), ['--']);
  });

  test('CMD is exactly ["node","dist/cli.js","serve"] in exec form, and the real CLI parser accepts it', () => {
    const cmd = last(runtime, 'CMD');
    assert.ok(cmd, 'no CMD');
    const argv = execForm(cmd.args);
    assert.deepEqual(argv, ['node', 'dist/cli.js', 'serve']);
    const parsed = parseCommand(argv.slice(2), runtimeEnv);
    assert.equal(parsed.command, 'serve');
  });

  test('runtime runs as a numeric non-root user', () => {
    const user = last(runtime, 'USER');
    assert.ok(user, 'runtime stage has no USER (would run as root)');
    const match = /^(\d+)(?::(\d+))?$/.exec(user.args);
    assert.ok(match, `USER "${user.args}" must be numeric (uid[:gid]) so runAsNonRoot can verify it`);
    assert.notEqual(Number(match[1]), 0, 'USER must not be root');
    if (match[2] !== undefined) assert.notEqual(Number(match[2]), 0, 'group must not be root');
  });

  test('EXPOSE matches the CLI default proxy and admin ports', () => {
    const exposed = runtime.instructions
      .filter((i) => i.keyword === 'EXPOSE')
      .flatMap((i) => i.args.split(' '))
      .map((p) => Number(p.replace(/\/tcp$/, '')));
    const proxy = parseListenAddress(DEFAULTS.listen, 'default').port;
    const admin = parseListenAddress(DEFAULTS.admin, 'default').port;
    assert.deepEqual(exposed.sort(), [proxy, admin].sort());
    const settings = parseCommand(['serve'], runtimeEnv);
    assert.equal(settings.command, 'serve');
    if (settings.command === 'serve') assert.deepEqual([settings.settings.listen.port, settings.settings.admin.port], [proxy, admin], 'image ENV must not move the ports away from EXPOSE');
  });

  test('production env: NODE_ENV=production and TOLLGATE_CONFIG pointing at the policy baked into the image', () => {
    assert.equal(runtimeEnv.NODE_ENV, 'production');
    assert.equal(runtimeEnv.TOLLGATE_CONFIG, '/etc/tollgate/policies.yaml');
    const parsed = parseCommand(['serve'], runtimeEnv);
    assert.ok(parsed.command === 'serve' && parsed.settings.configFile === runtimeEnv.TOLLGATE_CONFIG, 'the CLI must read TOLLGATE_CONFIG');
    const baked = runtime.instructions
      .filter((i) => i.keyword === 'COPY')
      .map(copyParts)
      .some((c) => !c.flags.has('from') && c.sources.includes('policies.yaml') && posix.join(c.destination, c.destination.endsWith('/') ? 'policies.yaml' : '') === runtimeEnv.TOLLGATE_CONFIG);
    assert.ok(baked, `the repository's policies.yaml must be copied to ${runtimeEnv.TOLLGATE_CONFIG}`);
  });

  test('no ENV or ARG name looks like a secret (build args and env end up in the image history)', () => {
    for (const stage of stages) {
      for (const instruction of stage.instructions.filter((i) => i.keyword === 'ENV' || i.keyword === 'ARG')) {
        for (const name of assignments(instruction).keys()) {
          assert.doesNotMatch(name, /SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL/i, `Dockerfile:${instruction.line}: ${instruction.keyword} ${name}`);
        }
      }
    }
  });
});

describe('.dockerignore', () => {
  test('keeps every COPY source in the build context, and each exists in the repository', () => {
    for (const stage of stages) {
      for (const instruction of stage.instructions.filter((i) => i.keyword === 'COPY' || i.keyword === 'ADD')) {
        const copy = copyParts(instruction);
        if (copy.flags.has('from')) continue;
        for (const source of copy.sources) {
          assert.equal(isIgnored(dockerignore, source), false, `Dockerfile:${instruction.line}: ${source} is excluded by .dockerignore`);
          assert.ok(existsSync(repoPath(source)), `Dockerfile:${instruction.line}: ${source} does not exist`);
        }
      }
    }
    assert.equal(isIgnored(dockerignore, 'src/cli.ts'), false, 'files inside an allowed directory stay in');
  });

  test('keeps dependencies, build output, VCS data, tests, deployment files and secrets out', () => {
    for (const path of ['node_modules', 'node_modules/yaml/package.json', 'src/node_modules/x', 'dist/cli.js', '.git/HEAD', 'test/deploy/support.ts', 'bench/run.ts', 'k8s/base/deployment.yaml', 'npm-debug.log', '.env', 'src/.env.local']) {
      assert.equal(isIgnored(dockerignore, path), true, `${path} must not reach the build context`);
    }
  });

  test('the matcher follows Docker semantics: last match wins, ! re-includes, a matched parent covers its children', () => {
    assert.equal(isIgnored('*\n!src', 'src/a/b.ts'), false);
    assert.equal(isIgnored('src\n', 'src/a/b.ts'), true);
    assert.equal(isIgnored('**/*.log', 'a/b/c.log'), true);
    assert.equal(isIgnored('!keep\n*', 'keep'), true);
  });
});

describe('Dockerfile lint', () => {
  test('dockerlinter reports nothing (inline `# linter ignore=CODE` only with a reason)', () => {
    const linter = repoPath('node_modules/dockerlinter/bin/dockerfilelinter');
    // -s none: shellcheck runs in the next test, directly, so a missing binary cannot pass silently.
    // cwd: the linter writes temporary files into its working directory.
    const out = execFileSync(process.execPath, [linter, '-f', repoPath('Dockerfile'), '-j', '-s', 'none'], { cwd: scratch, encoding: 'utf8' });
    const findings: unknown = out.trim() === '' ? [] : JSON.parse(out);
    assert.deepEqual(findings, []);
  });

  test('shellcheck finds nothing in any RUN line (run as /bin/sh runs them)', (t) => {
    const shellcheck = requireTool(t, 'shellcheck', 'shellcheck');
    if (shellcheck === undefined) return;
    const check = (script: string, name: string): unknown[] => {
      const file = join(scratch, name);
      writeFileSync(file, `${script}\n`);
      try {
        execFileSync(shellcheck, ['-s', 'sh', '-f', 'json', file], { encoding: 'utf8' });
        return [];
      } catch (error) {
        const stdout = (error as { stdout?: string }).stdout ?? '';
        if (stdout.trim() === '') throw error;
        return JSON.parse(stdout) as unknown[];
      }
    };
    assert.ok(check('echo $UNQUOTED', 'canary.sh').length > 0, 'shellcheck must flag a known problem (canary)');
    stages.forEach((stage, s) =>
      stage.instructions
        .filter((i) => i.keyword === 'RUN' && execForm(i.args) === undefined)
        .forEach((run) => assert.deepEqual(check(run.args, `run-${s}-${run.line}.sh`), [], `Dockerfile:${run.line}: shellcheck`)),
    );
  });
});
