//! Shared by the simulator's report tests and the command line's: both
//! pin a report's files by their bytes.

use std::path::Path;

/// Every file under `dir`, by path relative to it (sorted), with a hash
/// of its bytes: one line each.
pub fn digest_of_files(dir: &Path) -> String {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let name = path.strip_prefix(root).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.push((name, tollway_types::Hash32::of(&bytes).to_hex()));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    files.into_iter().map(|(name, hash)| format!("{name} {}\n", &hash[..16])).collect()
}
