// Taskmill example app: the frontend spawns the Taskmill sidecar through the shell plugin
// (`Command.sidecar('binaries/taskmill-sidecar', args)`, allowed by capabilities/default.json)
// and drives it with the TypeScript client. This side only hands out the arguments and makes
// sure the sidecar does not outlive the app: Tauri v2 does not kill sidecars on exit.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::path::Path;
use std::sync::Mutex;

use tauri::{Manager, RunEvent};

/// The pid of the sidecar the frontend spawned, as it reported it (`register_sidecar_pid`).
#[derive(Default)]
struct SidecarPid(Mutex<Option<u32>>);

impl SidecarPid {
    fn replace(&self, pid: Option<u32>) -> Option<u32> {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *guard, pid)
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The sidecar's arguments, in exactly the order the capability's argument validators expect:
/// `--parent-pid <this process> --db <app data dir>/tasks.db --allow-path <Pictures or home>
/// --log-level info --log-file <app log dir>/sidecar.log` (the sidecar creates that folder and
/// keeps the file small: rotated at 1 MiB, 3 older files).
#[tauri::command]
fn sidecar_args(
    app: tauri::AppHandle,
    state: tauri::State<'_, SidecarPid>,
) -> Result<Vec<String>, String> {
    // A sidecar still registered here belongs to an earlier page load (a reload in
    // development): it holds the database lock, so end it before the new one starts.
    if let Some(pid) = state.replace(None) {
        kill_sidecar(pid);
    }
    let data_dir = app.path().app_data_dir().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let allow = app
        .path()
        .picture_dir()
        .or_else(|_| app.path().home_dir())
        .map_err(|e| e.to_string())?;
    let log_dir = app.path().app_log_dir().map_err(|e| e.to_string())?;
    Ok(vec![
        "--parent-pid".into(),
        std::process::id().to_string(),
        "--db".into(),
        path_arg(&data_dir.join("tasks.db")),
        "--allow-path".into(),
        path_arg(&allow),
        "--log-level".into(),
        "info".into(),
        "--log-file".into(),
        path_arg(&log_dir.join("sidecar.log")),
    ])
}

/// The frontend reports the pid of the sidecar it spawned (`None` once that process ended),
/// so that the exit handler can end it.
#[tauri::command]
fn register_sidecar_pid(state: tauri::State<'_, SidecarPid>, pid: Option<u32>) {
    state.replace(pid);
}

/// Asks the sidecar to stop: SIGTERM starts its graceful shutdown (running work is
/// checkpointed and requeued); on Windows `taskkill /T /F` ends it with its process tree
/// (a onefile build is a bootloader plus the Python process). `--parent-pid` is the second
/// safety net: the sidecar also shuts down when this process is gone.
fn kill_sidecar(pid: u32) {
    let pid = pid.to_string();
    #[cfg(windows)]
    let status = {
        use std::os::windows::process::CommandExt;
        const CREATE_NO_WINDOW: u32 = 0x0800_0000;
        std::process::Command::new("taskkill")
            .args(["/PID", pid.as_str(), "/T", "/F"])
            .creation_flags(CREATE_NO_WINDOW)
            .status()
    };
    #[cfg(not(windows))]
    let status = std::process::Command::new("kill")
        .args(["-TERM", pid.as_str()])
        .status();
    if let Err(err) = status {
        eprintln!("could not stop the Taskmill sidecar (pid {pid}): {err}");
    }
}

fn main() {
    tauri::Builder::default()
        .plugin(tauri_plugin_shell::init())
        .manage(SidecarPid::default())
        .invoke_handler(tauri::generate_handler![sidecar_args, register_sidecar_pid])
        .build(tauri::generate_context!())
        .expect("error while building the Taskmill example app")
        .run(|app, event| {
            if let RunEvent::Exit = event {
                if let Some(pid) = app.state::<SidecarPid>().replace(None) {
                    kill_sidecar(pid);
                }
            }
        });
}
