const COMMANDS: &[&str] = &["send", "state"];

fn main() {
    tauri_plugin::Builder::new(COMMANDS).build();
}
