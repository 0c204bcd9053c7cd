#!/usr/bin/env node
// The real AI SDK client (`ai` package) talking to TurboKit's chat endpoints, as `useChat` does:
// `DefaultChatTransport` fetches and parses the UI message stream, `readUIMessageStream` assembles
// the assistant UIMessage with `terminateOnError: true`.
//
//   node chat_client.mjs send   --base-url URL --token TOKEN --thread ID --prompt TEXT [--chunks FILE]
//   node chat_client.mjs resume --base-url URL --token TOKEN --thread ID [--chunks FILE]
//
// Every option may come from the environment instead: TURBOKIT_BASE_URL, TURBOKIT_TOKEN,
// TURBOKIT_THREAD_ID, TURBOKIT_PROMPT. stdout: the final UIMessage as JSON (`null` when `resume`
// finds no active run, i.e. a 204). `--chunks FILE` also writes every chunk the transport accepted,
// one JSON object per line. Any error (HTTP status, a chunk the SDK rejects, an `error` chunk, an
// empty stream) goes to stderr with exit status 1.

import { writeFileSync } from 'node:fs';
import { inspect, parseArgs } from 'node:util';

import { DefaultChatTransport, readUIMessageStream } from 'ai';

function options() {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      'base-url': { type: 'string', default: process.env.TURBOKIT_BASE_URL },
      token: { type: 'string', default: process.env.TURBOKIT_TOKEN },
      thread: { type: 'string', default: process.env.TURBOKIT_THREAD_ID },
      prompt: { type: 'string', default: process.env.TURBOKIT_PROMPT },
      chunks: { type: 'string' },
    },
  });
  const command = positionals[0] ?? 'send';
  const required = ['base-url', 'token', 'thread', ...(command === 'send' ? ['prompt'] : [])];
  const missing = required.filter((name) => !values[name]);
  if (!['send', 'resume'].includes(command) || positionals.length > 1 || missing.length > 0) {
    throw new Error(
      `usage: chat_client.mjs send|resume --base-url URL --token TOKEN --thread ID [--prompt TEXT]` +
        (missing.length > 0 ? ` (missing: ${missing.join(', ')})` : ''),
    );
  }
  return { command, ...values };
}

/** Passes chunks through unchanged, keeping a copy of each. */
function recorder(seen) {
  return new TransformStream({
    transform(chunk, controller) {
      seen.push(chunk);
      controller.enqueue(chunk);
    },
  });
}

async function open(transport, opts) {
  if (opts.command === 'resume') {
    return transport.reconnectToStream({ chatId: opts.thread });
  }
  const message = {
    id: `user-${Date.now()}`,
    role: 'user',
    parts: [{ type: 'text', text: opts.prompt }],
  };
  return transport.sendMessages({
    trigger: 'submit-message',
    chatId: opts.thread,
    messageId: undefined,
    messages: [message],
    abortSignal: undefined,
  });
}

async function main() {
  const opts = options();
  const transport = new DefaultChatTransport({
    api: `${opts['base-url'].replace(/\/+$/, '')}/v1/chat`,
    headers: { Authorization: `Bearer ${opts.token}` },
  });
  const stream = await open(transport, opts);
  if (stream === null) {
    process.stdout.write('null\n');
    return;
  }
  const seen = [];
  let message;
  try {
    const messages = readUIMessageStream({
      stream: stream.pipeThrough(recorder(seen)),
      terminateOnError: true,
    });
    for await (const snapshot of messages) {
      message = snapshot;
    }
  } finally {
    if (opts.chunks) {
      writeFileSync(opts.chunks, seen.map((chunk) => `${JSON.stringify(chunk)}\n`).join(''));
    }
  }
  if (message === undefined) {
    throw new Error(`the stream produced no message (${seen.length} chunks)`);
  }
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

try {
  await main();
} catch (error) {
  const detail = error instanceof Error ? (error.stack ?? error.message) : String(error);
  process.stderr.write(`${detail}\n`);
  if (error instanceof Error && error.cause !== undefined) {
    process.stderr.write(`cause: ${inspect(error.cause, { depth: 8 })}\n`);
  }
  process.exitCode = 1;
}
