//! `airomem::testing::assert_schema_recorded` traces every type the state and its command
//! reach: every variant of enums nested in fields, in `Option`, `Vec`, `Box`, maps (as keys
//! and values) and generic structs, however deep, and recursive types. A change to a
//! nested enum's variant without a new schema version still fails the guard.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use airomem::testing::{SchemaCheck, assert_schema_recorded};
use airomem_workspace::panic_message_of;
use serde::{Deserialize, Serialize};

/// The guide's refusal example (docs/guide/commands-and-units.md), verbatim in its types: the verdict of the latest command
/// is kept in the state as an enum.
mod bank {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    pub struct Bank {
        pub balances: HashMap<String, u64>,
        pub last_outcome: Outcome,
    }

    #[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum Outcome {
        #[default]
        Done,
        InsufficientFunds {
            balance: u64,
        },
        NoSuchAccount,
        TooLarge,
    }

    #[derive(Serialize, Deserialize)]
    pub enum BankCommand {
        Deposit { account: String, amount: u64 },
        Withdraw { account: String, amount: u64 },
    }

    impl airomem::State for Bank {
        type Command = BankCommand;
        fn execute(&mut self, _: BankCommand) {}
    }
}

/// An enum in the state (holding another enum) and an enum in the command.
mod tasks {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    pub struct Tasks {
        pub open: Vec<String>,
        pub last_outcome: Outcome,
    }

    #[derive(Serialize, Deserialize, Default)]
    pub enum Outcome {
        #[default]
        Accepted,
        Refused {
            kind: Kind,
        },
    }

    #[derive(Serialize, Deserialize)]
    pub enum Kind {
        Duplicate,
        TooMany { limit: u32 },
    }

    #[derive(Serialize, Deserialize)]
    pub enum Command {
        Add { title: String, priority: Priority },
        Close { title: String },
    }

    #[derive(Serialize, Deserialize)]
    pub enum Priority {
        Low,
        Normal,
        Urgent(u8),
    }

    impl airomem::State for Tasks {
        type Command = Command;
        fn execute(&mut self, _: Command) {}
    }
}

/// Enums three levels deep, reached through every kind of container; `released` is the
/// recorded release, `forgotten` changes one variant of the innermost enum (`Level3`)
/// without a new version, `inserted` inserts a variant before others in it, `appended`
/// appends one after them, `bumped` is `forgotten` released properly.
macro_rules! deep_state {
    ($name:ident, $version:expr, { $($level3:tt)* }) => {
        mod $name {
            use super::*;

            #[derive(Serialize, Deserialize, Default)]
            pub struct Deep {
                pub current: Option<Level1>,
                pub history: Vec<Level1>,
                pub by_key: BTreeMap<Key, Level1>,
                pub by_name: HashMap<String, Tagged<Level2>>,
                pub boxed: Option<Box<Tagged<Key>>>,
                pub pair: Option<(Key, Level3)>,
            }

            /// A generic container, here with two different parameters.
            #[derive(Serialize, Deserialize)]
            pub struct Tagged<T> {
                pub tag: String,
                pub value: T,
            }

            #[derive(Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
            pub enum Key {
                Primary,
                Secondary(u16),
            }

            #[derive(Serialize, Deserialize)]
            pub enum Level1 {
                Empty,
                One(Level2),
                Many { items: Vec<Level2>, note: Option<String> },
            }

            #[derive(Serialize, Deserialize)]
            pub enum Level2 {
                Leaf(u32),
                Nested(Option<Level3>),
                Keyed(BTreeMap<Key, Vec<Level3>>),
            }

            #[derive(Serialize, Deserialize)]
            pub enum Level3 { $($level3)* }

            #[derive(Serialize, Deserialize)]
            pub enum Command {
                Set(Level1),
                Clear,
            }

            impl airomem::State for Deep {
                type Command = Command;
                const SCHEMA_VERSION: u32 = $version;
                fn execute(&mut self, _: Command) {}
            }
        }
    };
}

deep_state!(released, 1, { Red, Green { shade: u8 }, Blue(i64, i64) });
deep_state!(forgotten, 1, { Red, Green { shade: u16 }, Blue(i64, i64) });
deep_state!(inserted, 1, { Red, Yellow, Green { shade: u8 }, Blue(i64, i64) });
deep_state!(bumped, 2, { Red, Green { shade: u16 }, Blue(i64, i64) });
deep_state!(appended, 1, { Red, Green { shade: u8 }, Blue(i64, i64), Violet(Vec<Key>) });

/// Recursive types: a tree of nodes and an expression enum.
mod recursive {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    pub struct Forest {
        pub trees: Vec<Node>,
        pub formula: Option<Expr>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Node {
        pub label: String,
        pub children: Vec<Node>,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Expr {
        Neg(Box<Expr>),
        Add(Vec<Expr>),
        Lit(i64),
        If { test: Box<Expr>, then: Box<Expr>, otherwise: Option<Box<Expr>> },
    }

    impl airomem::State for Forest {
        type Command = Expr;
        fn execute(&mut self, _: Expr) {}
    }
}

fn recorded_json(file: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(file).expect("read the recorded shape")).expect("the recorded shape is JSON")
}

/// The variant names recorded for enum `name`, in index order.
fn variants(shape: &serde_json::Value, name: &str) -> Vec<String> {
    let Some(variants) = shape["types"][name]["ENUM"].as_object() else {
        panic!("{name} is not recorded as an enum: {:#}", shape["types"])
    };
    let mut indexed: Vec<(u32, String)> = variants
        .iter()
        .map(|(index, variant)| {
            let name = variant.as_object().and_then(|v| v.keys().next()).expect("a variant has a name");
            (index.parse().expect("a variant index"), name.clone())
        })
        .collect();
    indexed.sort();
    indexed.into_iter().map(|(_, name)| name).collect()
}

#[test]
fn the_readme_bank_with_its_outcome_enum_is_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("bank.json");
    assert_eq!(assert_schema_recorded::<bank::Bank>(&file), SchemaCheck::Recorded);
    assert_eq!(assert_schema_recorded::<bank::Bank>(&file), SchemaCheck::Unchanged);
    let shape = recorded_json(&file);
    assert_eq!(variants(&shape, "Outcome"), ["Done", "InsufficientFunds", "NoSuchAccount", "TooLarge"]);
    assert_eq!(variants(&shape, "BankCommand"), ["Deposit", "Withdraw"]);
    assert_eq!(shape["types"]["Outcome"]["ENUM"]["1"]["InsufficientFunds"]["STRUCT"][0]["balance"], "U64", "{shape:#}");
}

#[test]
fn enums_in_the_state_and_in_the_command_are_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("tasks.json");
    assert_eq!(assert_schema_recorded::<tasks::Tasks>(&file), SchemaCheck::Recorded);
    assert_eq!(assert_schema_recorded::<tasks::Tasks>(&file), SchemaCheck::Unchanged);
    let shape = recorded_json(&file);
    assert_eq!(variants(&shape, "Outcome"), ["Accepted", "Refused"]);
    assert_eq!(variants(&shape, "Kind"), ["Duplicate", "TooMany"]);
    assert_eq!(variants(&shape, "Priority"), ["Low", "Normal", "Urgent"]);
    assert_eq!(variants(&shape, "Command"), ["Add", "Close"]);
}

#[test]
fn enums_three_levels_deep_in_containers_are_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("deep.json");
    assert_eq!(assert_schema_recorded::<released::Deep>(&file), SchemaCheck::Recorded);
    assert_eq!(assert_schema_recorded::<released::Deep>(&file), SchemaCheck::Unchanged);
    let shape = recorded_json(&file);
    assert_eq!(variants(&shape, "Level1"), ["Empty", "One", "Many"]);
    assert_eq!(variants(&shape, "Level2"), ["Leaf", "Nested", "Keyed"]);
    assert_eq!(variants(&shape, "Level3"), ["Red", "Green", "Blue"]);
    assert_eq!(variants(&shape, "Key"), ["Primary", "Secondary"]);
    assert_eq!(variants(&shape, "Command"), ["Set", "Clear"]);
    // The generic struct is recorded once per parameter, each with its own content.
    let types = shape["types"].as_object().expect("types");
    let tagged: Vec<&String> = types.keys().filter(|name| name.starts_with("Tagged")).collect();
    assert_eq!(tagged.len(), 2, "{tagged:?}");
    let contents: Vec<String> =
        tagged.iter().map(|name| types[name.as_str()]["STRUCT"][1]["value"]["TYPENAME"].to_string()).collect();
    assert!(contents.contains(&"\"Level2\"".to_string()) && contents.contains(&"\"Key\"".to_string()), "{contents:?}");
}

#[test]
fn a_nested_variant_changed_without_a_new_version_fails_the_guard() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("deep.json");
    assert_eq!(assert_schema_recorded::<released::Deep>(&file), SchemaCheck::Recorded);
    let before = std::fs::read(&file).expect("read");

    let message = panic_message_of(|| assert_schema_recorded::<forgotten::Deep>(&file));
    assert!(message.contains("SCHEMA_VERSION is still 1") && message.contains("Level3: changed"), "{message}");
    assert!(!message.contains("Level1: changed") && !message.contains("Deep: changed"), "{message}");

    let message = panic_message_of(|| assert_schema_recorded::<inserted::Deep>(&file));
    assert!(message.contains("Level3: changed"), "{message}");
    assert_eq!(std::fs::read(&file).expect("read"), before, "a failed check leaves the record as it was");

    // A variant appended to the nested enum keeps old bytes meaningful: no new version.
    let extended = tmp.path().join("extended.json");
    std::fs::copy(&file, &extended).expect("copy");
    assert_eq!(assert_schema_recorded::<appended::Deep>(&extended), SchemaCheck::Extended { variants: 1 });

    // Released properly, the same change is recorded.
    assert_eq!(assert_schema_recorded::<bumped::Deep>(&file), SchemaCheck::Updated { from: 1, to: 2 });
    assert_eq!(assert_schema_recorded::<bumped::Deep>(&file), SchemaCheck::Unchanged);
}

#[test]
fn recursive_types_are_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("forest.json");
    assert_eq!(assert_schema_recorded::<recursive::Forest>(&file), SchemaCheck::Recorded);
    assert_eq!(assert_schema_recorded::<recursive::Forest>(&file), SchemaCheck::Unchanged);
    let shape = recorded_json(&file);
    assert_eq!(variants(&shape, "Expr"), ["Neg", "Add", "Lit", "If"]);
    assert_eq!(shape["types"]["Node"]["STRUCT"][1]["children"]["SEQ"]["TYPENAME"], "Node", "{shape:#}");
}

/// The guide's other states (docs/guide/), as it shows them: each can be guarded.
mod readme {
    use super::*;

    #[derive(Serialize, Deserialize, Default)]
    pub struct Ledger {
        pub entries: Vec<(String, i64)>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Post {
        pub account: String,
        pub amount: i64,
    }

    impl airomem::State for Ledger {
        type Command = Post;
        fn execute(&mut self, _: Post) {}
    }

    #[derive(Serialize, Deserialize, Default)]
    pub struct Visits {
        pub count: u64,
    }

    impl airomem::State for Visits {
        type Command = u64;
        fn execute(&mut self, _: u64) {}
    }

    /// The migration example's second version.
    #[derive(Serialize, Deserialize, Default)]
    pub struct Sessions {
        pub tokens: HashMap<String, Session>,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Session {
        pub user_id: u64,
        pub created_at_nanos: Option<u64>,
    }

    #[derive(Serialize, Deserialize)]
    pub enum SessionsCommand {
        CreateSession { token: String, user_id: u64 },
        DeleteSession { token: String },
    }

    impl airomem::State for Sessions {
        type Command = SessionsCommand;
        const SCHEMA_VERSION: u32 = 2;
        fn execute(&mut self, _: SessionsCommand) {}
    }
}

#[test]
fn the_readme_states_are_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    assert_eq!(assert_schema_recorded::<airomem_workspace::Sessions>(dir.join("s.json")), SchemaCheck::Recorded);
    assert_eq!(assert_schema_recorded::<readme::Ledger>(dir.join("l.json")), SchemaCheck::Recorded);
    assert_eq!(assert_schema_recorded::<readme::Visits>(dir.join("v.json")), SchemaCheck::Recorded);
    assert_eq!(assert_schema_recorded::<readme::Sessions>(dir.join("s2.json")), SchemaCheck::Recorded);
    let ledger = recorded_json(&dir.join("l.json"));
    assert_eq!(ledger["types"]["Ledger"]["STRUCT"][0]["entries"]["SEQ"]["TUPLE"], serde_json::json!(["STR", "I64"]));
    let visits = recorded_json(&dir.join("v.json"));
    assert_eq!(visits["command"], "U64");
    let sessions = recorded_json(&dir.join("s2.json"));
    assert_eq!(sessions["types"]["Session"]["STRUCT"][1]["created_at_nanos"]["OPTION"], "U64");
}
