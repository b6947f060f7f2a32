// Taskmill example app. The Rust side owns the sidecar (tauri-plugin-taskmill, ../taskmill-tauri):
// it starts the frozen `taskmill-sidecar` (the `externalBin`) with arguments computed here,
// relays the page's JSON-RPC messages and shuts it down gracefully when the app exits. The page
// talks to it through `plugin:taskmill|send` and the `taskmill://message` event only; its
// capability (capabilities/default.json) grants no shell permission at all.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::path::PathBuf;

use tauri::{AppHandle, Manager, Runtime};
use tauri_plugin_taskmill::SidecarOptions;

/// The one folder the sidecar's file executors may touch (its `--allow-path`): the user's
/// Pictures folder, or the home folder where there is none.
fn scan_root<R: Runtime>(app: &AppHandle<R>) -> Result<PathBuf, String> {
    app.path()
        .picture_dir()
        .or_else(|_| app.path().home_dir())
        .map_err(|e| e.to_string())
}

/// What the sidecar gets: `--db <app data dir>/tasks.db --allow-path <scan root>
/// --log-level info --log-file <app log dir>/sidecar.log` (the plugin adds `--parent-pid`).
fn sidecar_options<R: Runtime>(app: &AppHandle<R>) -> Result<SidecarOptions, String> {
    let data_dir = app.path().app_data_dir().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let log_dir = app.path().app_log_dir().map_err(|e| e.to_string())?;
    Ok(SidecarOptions {
        db: data_dir.join("tasks.db"),
        allow_paths: vec![scan_root(app)?],
        log_file: Some(log_dir.join("sidecar.log")),
        log_level: Some("info".into()),
        extra_args: Vec::new(),
    })
}

/// The folder the page offers for scanning (it takes nothing from the page).
#[tauri::command]
fn example_folder(app: AppHandle) -> Result<String, String> {
    Ok(scan_root(&app)?.to_string_lossy().into_owned())
}

fn main() {
    tauri::Builder::default()
        // `app.shell()` (used by the Taskmill plugin) needs the shell plugin; the page gets
        // none of its permissions.
        .plugin(tauri_plugin_shell::init())
        .plugin(tauri_plugin_taskmill::Builder::new(sidecar_options).build())
        .invoke_handler(tauri::generate_handler![example_folder])
        .setup(|app| {
            // A second window on the same sidecar, on request (the end-to-end test uses it).
            if std::env::var_os("TASKMILL_EXAMPLE_SECOND_WINDOW").is_some() {
                tauri::WebviewWindowBuilder::new(app, "second", tauri::WebviewUrl::default())
                    .title("Taskmill (second window)")
                    .inner_size(1280.0, 800.0)
                    .build()?;
            }
            Ok(())
        })
        .run(tauri::generate_context!())
        .expect("error while running the Taskmill example app");
}
