// A balloons worker in Node, using only fetch (HTTP worker protocol v1, docs/worker-protocol.md).
//
//   node worker.mjs HANDLER.mjs
//
// HANDLER.mjs's default export is `async (input, ctx) => result`: `input` is the job's input
// (JSON), `ctx.log(text)` adds a log line, `ctx.progress(fraction, note)` reports progress,
// `ctx.signal` aborts when the job is cancelled. Its return value (JSON) completes the
// attempt; what it throws fails it (retryable when the error has `retryable: true`). Or import
// `work(handler)` from this module. The machine holds only its attempt's URL and token.
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function work(handler, env = process.env) {
  const url = env.BALLOONS_ATTEMPT_URL;
  const token = env.BALLOONS_ATTEMPT_TOKEN;
  if (!url || !token) throw new Error("BALLOONS_ATTEMPT_URL and _TOKEN are not set");
  let deadline = Date.now() / 1000 + 60;

  // One call; rides out a sleeping or restarting service (network errors, 429, 5xx) with
  // backoff until the attempt's deadline. A 4xx answer is final: its problem is thrown.
  async function call(method, path = "", body = undefined, type = "application/json") {
    for (let delay = 250; ; delay = Math.min(delay * 2, 8000)) {
      let resp;
      try {
        resp = await fetch(url + path, {
          method,
          headers: { authorization: `Bearer ${token}`, "content-type": type },
          body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
        });
      } catch (err) {
        resp = null;
      }
      if (resp && resp.ok) return resp.json();
      if (resp && resp.status < 500 && resp.status !== 429) {
        const problem = await resp.json().catch(() => ({}));
        const err = new Error(`${method} ${path || "/"}: ${resp.status} ${problem.code ?? ""}`);
        err.problem = problem;
        throw err;
      }
      if (Date.now() / 1000 + delay / 1000 > deadline + 60) throw new Error("service unreachable");
      await sleep(delay);
    }
  }

  const attempt = await call("GET"); // marks the attempt running
  deadline = attempt.deadline;
  const input = env.BALLOONS_INPUT_PATH
    ? JSON.parse(await readFile(env.BALLOONS_INPUT_PATH, "utf8"))
    : attempt.input;
  const cancel = new AbortController();
  let lines = [];
  const flush = async () => {
    if (!lines.length) return;
    const batch = lines.map((l) => JSON.stringify(l)).join("\n") + "\n";
    lines = [];
    await call("POST", "/logs", batch, "application/x-ndjson");
  };
  const beat = setInterval(async () => {
    try {
      const got = await call("POST", "/heartbeat", {});
      deadline = got.deadline;
      if (got.cancel) cancel.abort();
      await flush();
    } catch (err) {
      cancel.abort(); // superseded or finished: stop working on it
    }
  }, 2000);
  const ctx = {
    signal: cancel.signal,
    log: (text, source = "out") => lines.push({ text: String(text), source }),
    progress: (fraction, note = "") => call("POST", "/progress", { fraction, note }),
  };
  try {
    const result = await handler(input, ctx);
    await flush();
    await call("POST", "/complete", { result: result === undefined ? null : result });
  } catch (err) {
    await flush().catch(() => {});
    if (cancel.signal.aborted) return 1;
    await call("POST", "/fail", {
      error: { type: err?.name ?? "Error", message: String(err?.message ?? err), traceback: err?.stack ?? "" },
      retryable: err?.retryable === true,
    });
    return 1;
  } finally {
    clearInterval(beat);
  }
  return 0;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const mod = await import(pathToFileURL(process.argv[2]).href);
  process.exitCode = await work(mod.default);
}
