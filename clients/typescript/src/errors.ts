// The errors the client raises (`TaskmillError`, with the client's own codes beside the
// sidecar's) and the one way every part reports trouble that is not a caller's error: the
// `onError` hook, which must never break the client.

/** Client-side error codes (outside the sidecar's own codes). */
export const CLIENT_ERROR_CODES = {
  /** No answer within the call's timeout. */
  timeout: -32090,
  /** The sidecar exited while the call was in flight. */
  sidecarExited: -32091,
  /** The client was closed (or is closing). */
  closed: -32092,
  /** The sidecar cannot be (re)started. */
  sidecarFailed: -32093,
  /** The caller's AbortSignal fired. */
  aborted: -32094,
  /** The sidecar speaks another protocol version than this client (`data.expected`, `data.actual`). */
  protocolMismatch: -32095,
} as const;

export type ClientErrorKind = keyof typeof CLIENT_ERROR_CODES;

/** An error answer from the sidecar, or a client-side failure (see `CLIENT_ERROR_CODES`). */
export class TaskmillError extends Error {
  override readonly name = 'TaskmillError';
  readonly code: number;
  readonly data: unknown;
  /** `data.kind` of a sidecar error (`taskNotFound`, ...) or the client-side kind. */
  readonly kind: string;
  readonly method: string | undefined;

  constructor(code: number, message: string, data?: unknown, method?: string) {
    super(method ? `${method}: ${message}` : message);
    this.code = code;
    this.data = data;
    this.method = method;
    const k = isObject(data) && typeof data.kind === 'string' ? data.kind : undefined;
    this.kind = k ?? clientKind(code) ?? 'error';
  }
}

function clientKind(code: number): string | undefined {
  for (const [kind, c] of Object.entries(CLIENT_ERROR_CODES)) if (c === code) return kind;
  return undefined;
}

/** A client-side failure of `kind` (its code from `CLIENT_ERROR_CODES`, `data.kind` set). */
export function clientError(
  kind: ClientErrorKind,
  message: string,
  extra: Record<string, unknown> = {},
): TaskmillError {
  return new TaskmillError(CLIENT_ERROR_CODES[kind], message, { ...extra, kind });
}

/** The same error, its message prefixed with the method it failed. */
export function forMethod(err: TaskmillError, method: string): TaskmillError {
  return new TaskmillError(err.code, err.message, err.data, method);
}

/** Reports trouble that no caller is waiting for (bad lines, handler exceptions, ...). */
export type ReportError = (error: Error, detail?: { line?: string }) => void;

/** Wraps the `onError` hook: absent means ignore, and a throwing hook is ignored too. */
export function errorReporter(hook: ReportError | undefined): ReportError {
  return (err, detail) => {
    if (!hook) return;
    try {
      hook(err, detail);
    } catch {
      // the hook must never break the client
    }
  };
}

export function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
