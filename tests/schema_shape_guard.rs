//! `airomem::testing::assert_schema_recorded`: a shape change without a new schema version
//! fails the test that guards it, whatever the change (an added field, reordered enum
//! variants, a retyped field); a raised version records the new shape; an unchanged type
//! passes. Postcard would decode most of these changes silently, as something else.

use std::path::Path;

use airomem::testing::{SchemaCheck, assert_schema_recorded};
use airomem_workspace::panic_message_of;
use serde::{Deserialize, Serialize};

/// The released types.
mod v1 {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    pub struct Accounts {
        pub balances: Vec<(String, i64)>,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Command {
        Open { name: String },
        Remove { id: u32 },
    }

    impl airomem::State for Accounts {
        type Command = Command;
        fn execute(&mut self, _: Command) {}
    }
}

/// A variant inserted before another, with no new version: postcard would replay an old
/// `Remove { id }` as `Archive { id }`.
mod reordered {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    pub struct Accounts {
        pub balances: Vec<(String, i64)>,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Command {
        Open { name: String },
        Archive { id: u32 },
        Remove { id: u32 },
    }

    impl airomem::State for Accounts {
        type Command = Command;
        fn execute(&mut self, _: Command) {}
    }
}

/// A field retyped (i64 to u64) with no new version.
mod retyped {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    pub struct Accounts {
        pub balances: Vec<(String, u64)>,
    }

    impl airomem::State for Accounts {
        type Command = super::v1::Command;
        fn execute(&mut self, _: super::v1::Command) {}
    }
}

/// The reordered types, released properly: a new schema version.
mod v2 {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    pub struct Accounts {
        pub balances: Vec<(String, i64)>,
    }

    impl airomem::State for Accounts {
        type Command = super::reordered::Command;
        const SCHEMA_VERSION: u32 = 2;
        fn execute(&mut self, _: super::reordered::Command) {}
    }
}

/// A variant appended after the others, with no new version: old bytes still mean what
/// they meant, under postcard and JSON.
mod appended {
    use super::*;

    #[derive(Serialize, Deserialize)]
    pub enum Command {
        Open { name: String },
        Remove { id: u32 },
        Rename { id: u32, to: Label },
    }

    #[derive(Serialize, Deserialize)]
    pub struct Label(pub String);

    #[derive(Serialize, Deserialize, Default)]
    pub struct Accounts {
        pub balances: Vec<(String, i64)>,
    }

    impl airomem::State for Accounts {
        type Command = Command;
        fn execute(&mut self, _: Command) {}
    }
}

fn recorded(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("schema").join("accounts.json");
    assert_eq!(assert_schema_recorded::<v1::Accounts>(&file), SchemaCheck::Recorded);
    assert_eq!(assert_schema_recorded::<v1::Accounts>(&file), SchemaCheck::Unchanged);
    file
}

#[test]
fn reordered_variants_without_a_new_version_fail_the_guard() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = recorded(tmp.path());
    let before = std::fs::read(&file).expect("read");
    let message = panic_message_of(|| assert_schema_recorded::<reordered::Accounts>(&file));
    assert!(message.contains("SCHEMA_VERSION is still 1") && message.contains("Command: changed"), "{message}");
    assert_eq!(std::fs::read(&file).expect("read"), before, "a failed check leaves the record as it was");
}

#[test]
fn a_retyped_field_without_a_new_version_fails_the_guard() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = recorded(tmp.path());
    let message = panic_message_of(|| assert_schema_recorded::<retyped::Accounts>(&file));
    assert!(message.contains("Accounts: changed"), "{message}");
}

#[test]
fn a_new_version_records_the_new_shape_and_versions_never_go_down() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = recorded(tmp.path());
    assert_eq!(assert_schema_recorded::<v2::Accounts>(&file), SchemaCheck::Updated { from: 1, to: 2 });
    assert_eq!(assert_schema_recorded::<v2::Accounts>(&file), SchemaCheck::Unchanged);
    let message = panic_message_of(|| assert_schema_recorded::<v1::Accounts>(&file));
    assert!(message.contains("went down from 2") && message.contains("to 1"), "{message}");
}

/// The repository's own sessions domain keeps its recorded shape: this file is committed.
#[test]
fn the_sessions_schema_is_recorded() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema/sessions.json");
    let check = assert_schema_recorded::<airomem_workspace::Sessions>(&file);
    assert!(
        matches!(check, SchemaCheck::Unchanged) || std::env::var_os("CI").is_none(),
        "tests/schema/sessions.json must be committed: {check:?}"
    );
}

#[test]
fn an_appended_variant_needs_no_new_version_and_is_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = recorded(tmp.path());
    assert_eq!(assert_schema_recorded::<appended::Accounts>(&file), SchemaCheck::Extended { variants: 1 });
    assert_eq!(assert_schema_recorded::<appended::Accounts>(&file), SchemaCheck::Unchanged);
    // Taking the variant away again is a change like any other.
    let message = panic_message_of(|| assert_schema_recorded::<v1::Accounts>(&file));
    assert!(message.contains("Command: changed"), "{message}");
}
