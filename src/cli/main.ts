#!/usr/bin/env node
// Entry point of the `xoauth2-bridge` command.
import { buildProgram } from './program.js';

await buildProgram().parseAsync(process.argv);
