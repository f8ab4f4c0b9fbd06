#!/usr/bin/env node
// `muster agent …` takes its own entry, which loads the agent's modules only (docs/agent.md, "Memory").
const { main } = await import(
  process.argv[2] === 'agent' ? '../dist/src/cli/agent-main.js' : '../dist/src/cli/main.js'
);

// A reader that goes away (`muster … | head`) ends the output, not the program with a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  });
}

/**
 * Exits with `code` once stdout and stderr are flushed. A command that is done does not wait for
 * handles it left open; and a natural exit was seen spinning in Node's exit-time handle clean-up
 * (`Environment::CleanupHandles`) after `muster demo` stopped its worker processes, so the process
 * exits explicitly (docs/daemon.md, exit codes).
 */
function exit(code) {
  process.exitCode = code;
  let pending = 2;
  const flushed = () => {
    if (--pending === 0) process.exit(code);
  };
  process.stdout.write('', flushed);
  process.stderr.write('', flushed);
}

main(process.argv.slice(2)).then(exit, (err) => {
  console.error(err);
  exit(70);
});
