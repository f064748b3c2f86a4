#!/usr/bin/env node
// Entry point of the `xoauth2-bridge` command.
import { buildProgram } from './program.js';

// `xoauth2-bridge queue list | head` closes our stdout early: stop quietly, as `ls | head` does,
// instead of dying of an unhandled EPIPE.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

await buildProgram().parseAsync(process.argv);
