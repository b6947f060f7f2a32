// The JSON-RPC 2.0 core (PROTOCOL.md), the client's twin of the sidecar's `jsonrpc.py`: request
// ids, the calls waiting for an answer (with their timeouts and abort signals), matching
// answers and errors to them, and routing the sidecar's notifications and requests. It knows
// no process: the supervisor says when calls may go out (`canSend`, `sendQueued`) and when the
// ones in flight can no longer be answered (`rejectCalls`).

import { TaskmillError, asError, clientError, forMethod, isObject, type ReportError } from './errors.js';

export interface InvokeOptions {
  /** Overrides `ClientOptions.timeoutMs` for this call; 0 = none. */
  timeoutMs?: number;
  /** Rejects the call (kind `aborted`) when it fires; the sidecar may still act on it. */
  signal?: AbortSignal;
}

/** What the core needs from the rest of the client. */
export interface PeerLink {
  /** Writes one message line to the sidecar. */
  write(line: string): void | Promise<void>;
  /** Whether a new call goes out at once; otherwise it waits for `sendQueued()`. */
  canSend(): boolean;
  /** A notification from the sidecar. */
  onNotification(method: string, params: unknown): void;
  /** The requests the sidecar may send the client, by method; any other is answered -32601. */
  requestHandlers: ReadonlyMap<string, (requestId: unknown, params: unknown) => void>;
  reportError: ReportError;
}

/** The answer to a request from the sidecar. */
export type ResponseBody = { result: unknown } | { error: unknown };

/** Which calls `rejectCalls` fails: those not yet written, those written, or both. */
export type CallSet = 'queued' | 'sent' | 'all';

interface Call {
  id: number;
  method: string;
  line: string;
  sent: boolean;
  resolve: (value: unknown) => void;
  reject: (err: TaskmillError) => void;
  timer?: ReturnType<typeof setTimeout>;
  cleanup?: () => void;
}

export class JsonRpcPeer {
  private nextId = 1;
  private readonly calls = new Map<number, Call>();
  /** Ids whose answer no longer matters (timed out, aborted, `shutdown`): dropped silently. */
  private readonly abandoned = new Set<number>();

  constructor(
    private readonly link: PeerLink,
    private readonly defaultTimeoutMs: number,
  ) {}

  // --- outgoing ------------------------------------------------------------------------------

  /** A request; sent now when `canSend()`, else queued (its timeout already running). */
  request(method: string, params: unknown, options: InvokeOptions = {}): Promise<unknown> {
    const id = this.nextId++;
    const line = JSON.stringify({ jsonrpc: '2.0', id, method, params });
    return new Promise((resolve, reject) => {
      const call: Call = { id, method, line, sent: false, resolve, reject };
      const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        call.timer = setTimeout(() => {
          this.settle(id, undefined, clientError('timeout', `no answer within ${timeoutMs} ms`));
          this.abandoned.add(id);
        }, timeoutMs);
      }
      const signal = options.signal;
      if (signal) {
        if (signal.aborted) {
          reject(forMethod(clientError('aborted', 'aborted'), method));
          if (call.timer) clearTimeout(call.timer);
          return;
        }
        const onAbort = () => {
          this.settle(id, undefined, clientError('aborted', 'aborted by the caller'));
          this.abandoned.add(id);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        call.cleanup = () => signal.removeEventListener('abort', onAbort);
      }
      this.calls.set(id, call);
      if (this.link.canSend()) this.send(call);
    });
  }

  /** A request whose answer nobody waits for (`shutdown`); a failed write is ignored too. */
  requestIgnoringAnswer(method: string, params: unknown): void {
    const id = this.nextId++;
    this.abandoned.add(id);
    this.writeLine(JSON.stringify({ jsonrpc: '2.0', id, method, params }), () => {});
  }

  /** Sends the queued calls, in call order. */
  sendQueued(): void {
    for (const call of [...this.calls.values()]) {
      if (!call.sent) this.send(call);
    }
  }

  /** Rejects calls with `err` (each gets its method name added). */
  rejectCalls(which: CallSet, err: TaskmillError): void {
    for (const call of [...this.calls.values()]) {
      if (which === 'sent' && !call.sent) continue;
      if (which === 'queued' && call.sent) continue;
      this.settle(call.id, undefined, err);
    }
  }

  notify(method: string, params: unknown): void {
    this.writeLine(JSON.stringify({ jsonrpc: '2.0', method, params }));
  }

  /** Answers a request from the sidecar. */
  respond(requestId: unknown, body: ResponseBody): void {
    this.writeLine(JSON.stringify({ jsonrpc: '2.0', id: requestId, ...body }));
  }

  private send(call: Call): void {
    call.sent = true;
    this.writeLine(call.line, (err) =>
      this.settle(call.id, undefined, clientError('sidecarExited', `write failed: ${err}`)),
    );
  }

  private writeLine(line: string, onFail?: (err: unknown) => void): void {
    try {
      const r = this.link.write(line);
      if (r && typeof (r as Promise<void>).then === 'function') {
        (r as Promise<void>).then(undefined, (err: unknown) => {
          if (onFail) onFail(err);
          else this.link.reportError(new Error(`write failed: ${String(err)}`));
        });
      }
    } catch (err) {
      if (onFail) onFail(err);
      else this.link.reportError(new Error(`write failed: ${String(err)}`));
    }
  }

  /** Resolves or rejects a call once; `err` gets the method name added. */
  private settle(id: number, result: unknown, err?: TaskmillError): void {
    const call = this.calls.get(id);
    if (!call) return;
    this.calls.delete(id);
    if (call.timer) clearTimeout(call.timer);
    call.cleanup?.();
    if (err) call.reject(forMethod(err, call.method));
    else call.resolve(result);
  }

  // --- incoming ------------------------------------------------------------------------------

  /** One stdout line: a message or a batch. Trouble goes to `reportError`, never thrown. */
  receive(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.link.reportError(new Error('the sidecar wrote a line that is not JSON'), { line });
      return;
    }
    const messages = Array.isArray(msg) ? msg : [msg];
    for (const m of messages) {
      try {
        this.handleMessage(m, line);
      } catch (err) {
        this.link.reportError(asError(err), { line });
      }
    }
  }

  private handleMessage(msg: unknown, line: string): void {
    if (!isObject(msg) || msg.jsonrpc !== '2.0') {
      this.link.reportError(new Error('the sidecar wrote something that is not JSON-RPC 2.0'), { line });
      return;
    }
    if (typeof msg.method === 'string') {
      if ('id' in msg) this.handleRequest(msg.id, msg.method, msg.params);
      else this.link.onNotification(msg.method, msg.params);
      return;
    }
    if ('result' in msg || 'error' in msg) {
      const id = msg.id;
      if (typeof id === 'number' && this.calls.has(id)) {
        if ('error' in msg) {
          const e = isObject(msg.error) ? msg.error : {};
          const code = typeof e.code === 'number' ? e.code : -32603;
          const message = typeof e.message === 'string' ? e.message : 'error';
          this.settle(id, undefined, new TaskmillError(code, message, e.data));
        } else {
          this.settle(id, msg.result);
        }
      } else if (typeof id === 'number' && this.abandoned.has(id)) {
        this.abandoned.delete(id); // a late answer to a call that timed out
      } else if (id === null && 'error' in msg) {
        const why = `the sidecar rejected a message: ${JSON.stringify(msg.error)}`;
        this.link.reportError(new Error(why), { line });
      } else {
        this.link.reportError(new Error(`an answer for an unknown id ${JSON.stringify(id)}`), { line });
      }
      if (this.abandoned.size > 10_000) this.abandoned.clear();
      return;
    }
    this.link.reportError(new Error('an unrecognised JSON-RPC message'), { line });
  }

  private handleRequest(requestId: unknown, method: string, params: unknown): void {
    const handler = this.link.requestHandlers.get(method);
    if (handler) {
      handler(requestId, params);
      return;
    }
    this.respond(requestId, {
      error: { code: -32601, message: `method not found: ${method}`, data: { kind: 'methodNotFound' } },
    });
  }
}
