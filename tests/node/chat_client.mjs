#!/usr/bin/env node
// The real AI SDK client (`ai` package) talking to TurboKit's chat endpoints, as `useChat` does:
// `DefaultChatTransport` fetches and parses the UI message stream, `readUIMessageStream` assembles
// the assistant UIMessage with `terminateOnError: true`.
//
//   node chat_client.mjs send   --base-url URL --token TOKEN --thread ID --prompt TEXT [--chunks FILE]
//   node chat_client.mjs resume --base-url URL --token TOKEN --thread ID [--chunks FILE]
//   node chat_client.mjs approve --base-url URL --token TOKEN --thread ID --approval ID
//                                --approved true|false --message FILE [--chunks FILE]
//
// `approve` posts a decision to /v1/chat/{thread}/approvals/{approval} through the same transport
// and continues the paused assistant message read from FILE (JSON), as `useChat` continues its
// last assistant message.
//
// Every option may come from the environment instead: TURBOKIT_BASE_URL, TURBOKIT_TOKEN,
// TURBOKIT_THREAD_ID, TURBOKIT_PROMPT. stdout: the final UIMessage as JSON (`null` when `resume`
// finds no active run, i.e. a 204). `--chunks FILE` also writes every chunk the transport accepted,
// one JSON object per line. Any error (HTTP status, a chunk the SDK rejects, an `error` chunk, an
// empty stream) goes to stderr with exit status 1.

import { readFileSync, writeFileSync } from 'node:fs';
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
      approval: { type: 'string' },
      approved: { type: 'string' },
      message: { type: 'string' },
    },
  });
  const command = positionals[0] ?? 'send';
  const extra = { send: ['prompt'], resume: [], approve: ['approval', 'approved', 'message'] };
  const required = ['base-url', 'token', 'thread', ...(extra[command] ?? [])];
  const missing = required.filter((name) => !values[name]);
  if (!(command in extra) || positionals.length > 1 || missing.length > 0) {
    throw new Error(
      `usage: chat_client.mjs send|resume|approve --base-url URL --token TOKEN --thread ID ...` +
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

async function open(transport, opts, paused) {
  if (opts.command === 'resume') {
    return transport.reconnectToStream({ chatId: opts.thread });
  }
  if (opts.command === 'approve') {
    return transport.sendMessages({
      trigger: 'submit-message',
      chatId: opts.thread,
      messageId: undefined,
      messages: [paused],
      abortSignal: undefined,
    });
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
  const base = opts['base-url'].replace(/\/+$/, '');
  const paused = opts.message ? JSON.parse(readFileSync(opts.message, 'utf8')) : undefined;
  const transport = new DefaultChatTransport({
    api: `${base}/v1/chat`,
    headers: { Authorization: `Bearer ${opts.token}`, Accept: 'text/event-stream' },
    prepareSendMessagesRequest:
      opts.command === 'approve'
        ? () => ({
            api: `${base}/v1/chat/${opts.thread}/approvals/${opts.approval}`,
            body: { approved: opts.approved === 'true' },
          })
        : undefined,
  });
  const stream = await open(transport, opts, paused);
  if (stream === null) {
    process.stdout.write('null\n');
    return;
  }
  const seen = [];
  let message;
  try {
    const messages = readUIMessageStream({
      message: paused,
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
