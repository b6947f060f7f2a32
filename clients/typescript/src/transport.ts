// The contract between the client and one way of reaching the sidecar process (Node's
// `child_process`, Tauri's shell plugin, the Rust side of the Tauri plugin, a test's fake): start
// it (or attach to it), write lines to its stdin, kill it (or detach). The transport only moves
// text; the client frames lines and supervises the process.

/** How the sidecar process ended. */
export interface ExitInfo {
  code: number | null;
  signal: string | number | null;
  /** Set when the process could not be started or its pipes failed. */
  error?: string;
  /**
   * Only from a transport whose process is owned elsewhere (`sharedProcess`): whether its owner
   * restarts it. The client then re-attaches at once (true) or gives up (false) instead of
   * applying its own restart policy.
   */
  willRestart?: boolean;
}

/**
 * One sidecar process at a time. `start` may be called again after the process ended (the
 * client restarts it that way); callbacks of an earlier process must not fire after its exit.
 */
export interface Transport {
  /**
   * Spawns the sidecar. `onLine` receives stdout text: whole lines, parts of lines or several
   * lines, with `\n` or `\r\n` terminators; the client re-frames it. `onStderr` likewise for
   * stderr. `onExit` is called once, after the last stdout text.
   * `onError` (optional to call) reports trouble that is not an exit, e.g. an undecodable line.
   * A rejected promise (or a throw) means the process did not start.
   */
  start(
    onLine: (text: string) => void,
    onStderr: (text: string) => void,
    onExit: (info: ExitInfo) => void,
    onError?: (error: Error) => void,
  ): void | Promise<void>;
  /** Writes one message line; the transport appends `\n`. */
  write(line: string): void | Promise<void>;
  /** Kills the process now (no grace); a `sharedProcess` transport detaches instead. */
  kill(): void | Promise<void>;
  /**
   * True when the process belongs to someone else (the Rust side of the Tauri plugin, serving
   * every window): `close()` then detaches without sending `shutdown`, `start` attaches (and
   * delivers `sidecar.ready` itself when the process announced it earlier), and the owner's
   * restarts are reported through `ExitInfo.willRestart`.
   */
  readonly sharedProcess?: boolean;
}
