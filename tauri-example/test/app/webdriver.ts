// The few W3C WebDriver commands the real-app test needs, over plain fetch (no client library):
// tauri-driver speaks WebDriver on 127.0.0.1 and hands the session to WebKitWebDriver, which
// starts the app binary named in `tauri:options.application`.

export class WebDriverError extends Error {}

export class Session {
  constructor(
    private readonly base: string,
    readonly id: string,
  ) {}

  static async create(base: string, application: string, args: string[] = []): Promise<Session> {
    const value = await call(base, 'POST', '/session', {
      capabilities: { alwaysMatch: { 'tauri:options': { application, args } } },
    });
    return new Session(base, value.sessionId as string);
  }

  /** Runs `script` (a function body; `arguments` holds `args`) in the page and returns its value. */
  execute<T>(script: string, args: unknown[] = []): Promise<T> {
    return call(this.base, 'POST', `/session/${this.id}/execute/sync`, { script, args });
  }

  /** Like `execute`, but the script ends by calling `arguments[arguments.length - 1](value)`. */
  executeAsync<T>(script: string, args: unknown[] = []): Promise<T> {
    return call(this.base, 'POST', `/session/${this.id}/execute/async`, { script, args });
  }

  /** A PNG of the window's page. */
  async screenshot(): Promise<Buffer> {
    const b64: string = await call(this.base, 'GET', `/session/${this.id}/screenshot`);
    return Buffer.from(b64, 'base64');
  }

  windowHandles(): Promise<string[]> {
    return call(this.base, 'GET', `/session/${this.id}/window/handles`);
  }

  /** Makes the window with this handle the one the next commands go to. */
  async switchTo(handle: string): Promise<void> {
    await call(this.base, 'POST', `/session/${this.id}/window`, { handle });
  }

  /** Switches to the window whose Tauri label is `label` (waits for it to exist). */
  async switchToLabel(label: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (const handle of await this.windowHandles()) {
        await this.switchTo(handle);
        const current = await this.execute<string | null>(
          'return window.__TAURI_INTERNALS__?.metadata?.currentWebview?.label ?? null',
        ).catch(() => null);
        if (current === label) return;
      }
      if (Date.now() > deadline) throw new WebDriverError(`no window labelled ${label}`);
      await sleep(250);
    }
  }

  /** Closes the current window (the app's only one: the app then exits). */
  closeWindow(): Promise<unknown> {
    return call(this.base, 'DELETE', `/session/${this.id}/window`);
  }

  async delete(): Promise<void> {
    await call(this.base, 'DELETE', `/session/${this.id}`).catch(() => undefined);
  }

  /** Polls `script` until it returns a truthy value; returns that value. */
  async waitFor<T>(what: string, script: string, args: unknown[] = [], timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      try {
        const value = await this.execute<T>(script, args);
        if (value) return value;
        last = value;
      } catch (err) {
        last = err;
      }
      if (Date.now() > deadline) throw new WebDriverError(`timed out waiting for ${what} (last: ${String(last)})`);
      await sleep(250);
    }
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function call(base: string, method: string, path: string, body?: unknown): Promise<any> {
  const res = await fetch(base + path, {
    // A command that hangs fails the test with its name instead of stalling it.
    signal: AbortSignal.timeout(60_000),
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: any;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new WebDriverError(`${method} ${path}: HTTP ${res.status}: ${text.slice(0, 500)}`);
  }
  const value = parsed?.value;
  if (!res.ok) {
    throw new WebDriverError(`${method} ${path}: ${value?.error}: ${value?.message ?? text.slice(0, 500)}`);
  }
  return value;
}

/** Waits until a WebDriver server answers `/status`. */
export async function waitReady(base: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(base + '/status');
      if (res.ok || res.status === 404 || res.status === 405) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new WebDriverError(`no WebDriver server at ${base}`);
    await sleep(200);
  }
}
