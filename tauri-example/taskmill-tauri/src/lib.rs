//! Taskmill for Tauri v2: the Rust side owns the sidecar.
//!
//! The plugin spawns the frozen sidecar (`app.shell().sidecar(...)`, an `externalBin`) at setup
//! with every argument computed here (`--parent-pid` is this process, the rest comes from the
//! app's [`SidecarOptions`]), relays the page's JSON-RPC messages to its stdin (command
//! `plugin:taskmill|send`) and its stdout lines to the windows (event `taskmill://message`),
//! restarts it with backoff when it dies (not on exit codes 2, 3 and 4), and on
//! `RunEvent::ExitRequested` holds the exit, sends `shutdown {graceMs}`, waits (bounded), kills
//! what is left and then lets the app exit. The page needs no shell permission and gets no
//! command that takes a pid or a path: its capability grants `taskmill:default`
//! (`allow-send`, `allow-state`).
//!
//! ```ignore
//! # fn main() {
//! use tauri::Manager;
//! use tauri_plugin_taskmill::SidecarOptions;
//!
//! tauri::Builder::default()
//!     .plugin(tauri_plugin_shell::init())
//!     .plugin(tauri_plugin_taskmill::Builder::new(|app| {
//!         let data = app.path().app_data_dir().map_err(|e| e.to_string())?;
//!         Ok(SidecarOptions {
//!             db: data.join("tasks.db"),
//!             allow_paths: vec![app.path().picture_dir().map_err(|e| e.to_string())?],
//!             ..Default::default()
//!         })
//!     }).build())
//!     .run(tauri::generate_context!())
//!     .expect("error while running the app");
//! # }
//! ```

pub mod args;
pub mod backoff;
pub mod router;

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tauri::plugin::TauriPlugin;
use tauri::{AppHandle, Emitter, EventTarget, Manager, RunEvent, Runtime, Webview, WindowEvent};
use tauri_plugin_shell::process::{CommandChild, CommandEvent};
use tauri_plugin_shell::ShellExt;

pub use args::{sidecar_args, SidecarOptions};
pub use backoff::{should_restart, Backoff};
use router::{Delivery, Router, Target};

/// The event carrying one JSON-RPC message (a string) from the sidecar.
pub const MESSAGE_EVENT: &str = "taskmill://message";
/// The event carrying the sidecar's [`Status`] on every change.
pub const STATE_EVENT: &str = "taskmill://state";

/// Where the sidecar process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SidecarState {
    Starting,
    Running,
    Restarting,
    Stopped,
}

/// The answer of `plugin:taskmill|state` and the payload of `taskmill://state`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub state: SidecarState,
    /// How many times the sidecar was started again after it ended on its own.
    pub restarts: u32,
    pub last_exit_code: Option<i32>,
    /// The params of the current sidecar's `sidecar.ready` notification.
    pub ready: Option<Value>,
}

type OptionsFn<R> = dyn Fn(&AppHandle<R>) -> Result<SidecarOptions, String> + Send + Sync;

/// Configures the plugin: the app computes the sidecar's options (paths from its own path
/// resolver); the plugin adds `--parent-pid`.
pub struct Builder<R: Runtime> {
    program: String,
    options: Box<OptionsFn<R>>,
    shutdown_grace: Duration,
    exit_timeout: Duration,
    backoff: Backoff,
}

impl<R: Runtime> Builder<R> {
    /// `options` is called at every (re)start of the sidecar.
    pub fn new<F>(options: F) -> Self
    where
        F: Fn(&AppHandle<R>) -> Result<SidecarOptions, String> + Send + Sync + 'static,
    {
        Builder {
            program: "taskmill-sidecar".to_string(),
            options: Box::new(options),
            shutdown_grace: Duration::from_secs(3),
            exit_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
        }
    }

    /// The sidecar's file name as `sidecar()` wants it: the `externalBin` entry's last part
    /// (default `taskmill-sidecar` for `binaries/taskmill-sidecar`).
    pub fn program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    /// `graceMs` of the `shutdown` sent when the app exits: how long running tasks may take
    /// to finish before they are interrupted and requeued (default 3 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// How much longer than the grace the app waits for the sidecar to exit before it kills
    /// it (default 5 s).
    pub fn exit_timeout(mut self, timeout: Duration) -> Self {
        self.exit_timeout = timeout;
        self
    }

    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn build(self) -> TauriPlugin<R> {
        tauri::plugin::Builder::new("taskmill")
            .invoke_handler(tauri::generate_handler![send, state])
            .setup(move |app, _api| {
                app.manage(Supervisor {
                    config: self,
                    shared: Mutex::new(Shared {
                        child: None,
                        router: Router::new(),
                        status: Status {
                            state: SidecarState::Starting,
                            restarts: 0,
                            last_exit_code: None,
                            ready: None,
                        },
                        shutting_down: false,
                        may_exit: false,
                    }),
                    changed: Condvar::new(),
                });
                let app = app.clone();
                std::thread::Builder::new()
                    .name("taskmill-sidecar".into())
                    .spawn(move || supervise(app))?;
                Ok(())
            })
            .on_event(|app, event| match event {
                RunEvent::ExitRequested { code, api, .. } => {
                    // Held while the sidecar shuts down; the plugin calls `app.exit` after.
                    let hold = exit_requested(app, *code);
                    if hold {
                        api.prevent_exit();
                    }
                }
                RunEvent::Exit => {
                    // Last resort (the app exited without asking): no orphan.
                    let supervisor = app.state::<Supervisor<R>>();
                    let child = supervisor.lock().child.take();
                    if let Some(child) = child {
                        let _ = child.kill();
                    }
                }
                RunEvent::WindowEvent {
                    label,
                    event: WindowEvent::Destroyed,
                    ..
                } => {
                    app.state::<Supervisor<R>>()
                        .lock()
                        .router
                        .window_closed(label);
                }
                _ => {}
            })
            .build()
    }
}

struct Shared {
    child: Option<CommandChild>,
    router: Router,
    status: Status,
    /// The app is exiting: no restart, no new sidecar.
    shutting_down: bool,
    /// The sidecar is gone (or killed) after an exit request: let the next one through.
    may_exit: bool,
}

struct Supervisor<R: Runtime> {
    config: Builder<R>,
    shared: Mutex<Shared>,
    /// Signalled when the child ends or the app starts exiting.
    changed: Condvar,
}

impl<R: Runtime> Supervisor<R> {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn write_line(child: &mut CommandChild, line: &str) -> Result<(), String> {
    let mut bytes = Vec::with_capacity(line.len() + 1);
    bytes.extend_from_slice(line.as_bytes());
    bytes.push(b'\n');
    child
        .write(&bytes)
        .map_err(|e| format!("cannot write to the Taskmill sidecar: {e}"))
}

fn deliver<R: Runtime>(app: &AppHandle<R>, deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        let sent = match delivery.target {
            Target::All => app.emit(MESSAGE_EVENT, delivery.message),
            Target::Window(label) => app.emit_to(
                EventTarget::webview_window(label),
                MESSAGE_EVENT,
                delivery.message,
            ),
        };
        if let Err(err) = sent {
            eprintln!("taskmill: cannot deliver a sidecar message: {err}");
        }
    }
}

fn emit_status<R: Runtime>(app: &AppHandle<R>, status: Status) {
    if let Err(err) = app.emit(STATE_EVENT, status) {
        eprintln!("taskmill: cannot send the sidecar state: {err}");
    }
}

/// One page message for the sidecar. Resolves once it is written to the sidecar's stdin.
#[tauri::command]
async fn send<R: Runtime>(
    app: AppHandle<R>,
    webview: Webview<R>,
    message: String,
) -> Result<(), String> {
    let supervisor = app.state::<Supervisor<R>>();
    let replies = {
        let mut shared = supervisor.lock();
        let shared = &mut *shared;
        let Some(child) = shared.child.as_mut() else {
            return Err("the Taskmill sidecar is not running".to_string());
        };
        let routed = shared.router.from_page(webview.label(), &message)?;
        if let Some(line) = &routed.to_sidecar {
            write_line(child, line)?;
        }
        routed.to_pages
    };
    deliver(&app, replies);
    Ok(())
}

/// The sidecar's [`Status`], for a page that loads after the events it missed.
#[tauri::command]
async fn state<R: Runtime>(app: AppHandle<R>) -> Status {
    app.state::<Supervisor<R>>().lock().status.clone()
}

/// Starts the sidecar and starts it again after it ends, until the app exits or it ends with
/// a code that a restart cannot cure.
fn supervise<R: Runtime>(app: AppHandle<R>) {
    let supervisor = app.state::<Supervisor<R>>();
    let config = &supervisor.config;
    let mut attempt: Option<u32> = None;
    loop {
        let spawned = {
            let mut shared = supervisor.lock();
            if shared.shutting_down {
                break;
            }
            // Options the app computed wrongly (a relative path, a filesystem root) are like
            // a bad command line (exit code 2): a restart cannot cure them.
            let args = match (config.options)(&app)
                .and_then(|options| sidecar_args(std::process::id(), &options))
            {
                Ok(args) => args,
                Err(err) => {
                    eprintln!("taskmill: the sidecar's options are refused: {err}");
                    break;
                }
            };
            let started = app
                .shell()
                .sidecar(&config.program)
                .and_then(|command| {
                    command
                        .args(args)
                        // One group: a onefile build is a bootloader plus the Python process,
                        // and a kill must reach both.
                        .set_process_group(true)
                        .spawn()
                })
                .map_err(|e| e.to_string());
            match started {
                Ok((events, child)) => {
                    eprintln!("taskmill: started the sidecar (pid {})", child.pid());
                    shared.child = Some(child);
                    shared.status.state = SidecarState::Starting;
                    shared.status.ready = None;
                    Ok((events, shared.status.clone()))
                }
                Err(err) => Err(err),
            }
        };
        // (Events are sent without holding the lock: an emit may wait for the main thread.)
        let spawned = spawned.map(|(events, status)| {
            emit_status(&app, status);
            events
        });
        let started_at = Instant::now();
        let code = match spawned {
            Ok(mut events) => {
                let mut code = None;
                while let Some(event) = events.blocking_recv() {
                    match event {
                        CommandEvent::Stdout(bytes) => on_stdout(&app, &supervisor, &bytes),
                        CommandEvent::Stderr(bytes) => {
                            let text = String::from_utf8_lossy(&bytes);
                            eprintln!("[taskmill-sidecar] {}", text.trim_end());
                        }
                        CommandEvent::Error(err) => {
                            eprintln!("taskmill: sidecar output error: {err}");
                        }
                        CommandEvent::Terminated(payload) => {
                            code = payload.code;
                            eprintln!(
                                "taskmill: the sidecar exited (code {:?}, signal {:?})",
                                payload.code, payload.signal
                            );
                        }
                        _ => {}
                    }
                }
                code
            }
            Err(err) => {
                eprintln!("taskmill: cannot start the sidecar: {err}");
                Some(1)
            }
        };

        let (failed, delay, status) = {
            let mut shared = supervisor.lock();
            shared.child = None;
            let failed = shared.router.sidecar_ended();
            shared.status.last_exit_code = code;
            shared.status.ready = None;
            let delay = if shared.shutting_down || !should_restart(code) {
                shared.status.state = SidecarState::Stopped;
                None
            } else {
                let next = config.backoff.next_attempt(attempt, started_at.elapsed());
                attempt = Some(next);
                shared.status.state = SidecarState::Restarting;
                shared.status.restarts = shared.status.restarts.saturating_add(1);
                Some(config.backoff.delay(next))
            };
            supervisor.changed.notify_all();
            (failed, delay, shared.status.clone())
        };
        emit_status(&app, status);
        deliver(&app, failed);
        let Some(delay) = delay else {
            break;
        };
        eprintln!(
            "taskmill: restarting the sidecar in {} ms",
            delay.as_millis()
        );
        let deadline = Instant::now() + delay;
        let mut shared = supervisor.lock();
        while !shared.shutting_down {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            shared = supervisor
                .changed
                .wait_timeout(shared, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
    let status = {
        let mut shared = supervisor.lock();
        shared.status.state = SidecarState::Stopped;
        supervisor.changed.notify_all();
        shared.status.clone()
    };
    emit_status(&app, status);
}

fn on_stdout<R: Runtime>(app: &AppHandle<R>, supervisor: &Supervisor<R>, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let line = text.trim_end_matches(['\n', '\r']);
    if line.trim().is_empty() {
        return;
    }
    let (routed, status) = {
        let mut shared = supervisor.lock();
        let shared = &mut *shared;
        let routed = shared.router.from_sidecar(line);
        if let (Some(reply), Some(child)) = (&routed.to_sidecar, shared.child.as_mut()) {
            if let Err(err) = write_line(child, reply) {
                eprintln!("taskmill: {err}");
            }
        }
        let status = routed.ready.clone().map(|ready| {
            shared.status.ready = Some(ready);
            shared.status.state = SidecarState::Running;
            shared.status.clone()
        });
        (routed, status)
    };
    deliver(app, routed.to_pages);
    if let Some(status) = status {
        emit_status(app, status);
    }
}

/// `RunEvent::ExitRequested`: true to hold the exit while the sidecar shuts down.
fn exit_requested<R: Runtime>(app: &AppHandle<R>, code: Option<i32>) -> bool {
    let supervisor = app.state::<Supervisor<R>>();
    let mut shared = supervisor.lock();
    if shared.may_exit {
        return false;
    }
    let already = shared.shutting_down;
    shared.shutting_down = true;
    supervisor.changed.notify_all();
    if already {
        return true;
    }
    let grace = supervisor.config.shutdown_grace;
    let id = shared.router.own_id();
    if let Some(child) = shared.child.as_mut() {
        let request = json!({
            "jsonrpc": "2.0",
            "id": id,
            "method": "shutdown",
            "params": {"graceMs": grace.as_millis() as u64},
        });
        match write_line(child, &request.to_string()) {
            Ok(()) => eprintln!(
                "taskmill: asked the sidecar to shut down (graceMs {})",
                grace.as_millis()
            ),
            Err(err) => eprintln!("taskmill: {err}"),
        }
    }
    drop(shared);
    let app = app.clone();
    let wait = grace + supervisor.config.exit_timeout;
    let spawned = std::thread::Builder::new()
        .name("taskmill-exit".into())
        .spawn(move || {
            let supervisor = app.state::<Supervisor<R>>();
            let deadline = Instant::now() + wait;
            let mut shared = supervisor.lock();
            while shared.child.is_some() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                shared = supervisor
                    .changed
                    .wait_timeout(shared, deadline - now)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .0;
            }
            let left = shared.child.take();
            shared.may_exit = true;
            drop(shared);
            if let Some(child) = left {
                eprintln!("taskmill: the sidecar did not exit in time; killing it");
                let _ = child.kill();
            }
            app.exit(code.unwrap_or(0));
        });
    if let Err(err) = spawned {
        eprintln!("taskmill: cannot wait for the sidecar: {err}");
        let mut shared = supervisor.lock();
        shared.may_exit = true;
        if let Some(child) = shared.child.take() {
            let _ = child.kill();
        }
        return false;
    }
    true
}
