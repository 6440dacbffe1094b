//! The organisational tree (contract §4) and scope rules.
//!
//! A scope is a unit and everything below it; `Scope::All` is an admin's.
//! The tree is small (a district has ~120 units, a province ~10⁴), so it is
//! held in memory as a map and walked by parent links.

use std::collections::{BTreeMap, BTreeSet};

use crate::wire::{OrgUnit, UnitType};

/// Longest org code accepted, in characters.
pub const ORG_CODE_CHARS_MAX: usize = 64;
/// Longest org unit name accepted, in characters.
pub const ORG_NAME_CHARS_MAX: usize = 200;

/// Who may see what: a unit's subtree, or everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Unit(String),
}

/// Why an org import was refused (`invalid_org_tree`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrgTreeError {
    #[error("unit {code}: parent {parent} is neither stored nor in the request")]
    MissingParent { code: String, parent: String },
    #[error("unit {0} would be its own ancestor (a cycle)")]
    Cycle(String),
    #[error("unit {0} appears more than once in the request")]
    Duplicate(String),
    #[error("unit {code}: {reason}")]
    Invalid { code: String, reason: String },
    /// Moving the unit would move records of an approved, locked period.
    #[error("unit {code}: moving it would change period {period} approved for {holder}; reopen that period first")]
    Locked {
        code: String,
        period: String,
        holder: String,
    },
}

impl OrgTreeError {
    /// The unit the error is about.
    pub fn code(&self) -> &str {
        match self {
            OrgTreeError::MissingParent { code, .. }
            | OrgTreeError::Invalid { code, .. }
            | OrgTreeError::Locked { code, .. } => code,
            OrgTreeError::Cycle(c) | OrgTreeError::Duplicate(c) => c,
        }
    }
}

/// The stored tree.
#[derive(Clone, Debug, Default)]
pub struct OrgTree {
    units: BTreeMap<String, OrgUnit>,
    children: BTreeMap<String, Vec<String>>,
}

impl OrgTree {
    /// Builds a tree from units already known to be valid (e.g. loaded from disk).
    pub fn from_units(units: impl IntoIterator<Item = OrgUnit>) -> OrgTree {
        let mut tree = OrgTree::default();
        for u in units {
            tree.units.insert(u.code.clone(), u);
        }
        tree.reindex();
        tree
    }

    fn reindex(&mut self) {
        self.children.clear();
        for u in self.units.values() {
            if let Some(p) = &u.parent {
                self.children
                    .entry(p.clone())
                    .or_default()
                    .push(u.code.clone());
            }
        }
    }

    pub fn get(&self, code: &str) -> Option<&OrgUnit> {
        self.units.get(code)
    }

    pub fn contains(&self, code: &str) -> bool {
        self.units.contains_key(code)
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn units(&self) -> impl Iterator<Item = &OrgUnit> {
        self.units.values()
    }

    /// Direct children, in code order.
    pub fn children(&self, code: &str) -> &[String] {
        self.children.get(code).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Units without a parent.
    pub fn roots(&self) -> Vec<&OrgUnit> {
        self.units.values().filter(|u| u.parent.is_none()).collect()
    }

    /// `code` followed by its ancestors up to the root.
    pub fn chain(&self, code: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = Some(code.to_string());
        while let Some(c) = cur {
            // The tree is acyclic by construction; the length bound only
            // keeps a corrupt store from looping for ever.
            if out.len() > self.units.len() {
                break;
            }
            cur = self.units.get(&c).and_then(|u| u.parent.clone());
            out.push(c);
        }
        out
    }

    /// Whether `code` is `ancestor` or lies below it.
    pub fn is_within(&self, code: &str, ancestor: &str) -> bool {
        let mut cur = Some(code);
        let mut steps = 0;
        while let Some(c) = cur {
            if c == ancestor {
                return true;
            }
            steps += 1;
            if steps > self.units.len() {
                return false;
            }
            cur = self.units.get(c).and_then(|u| u.parent.as_deref());
        }
        false
    }

    /// Whether `code` lies in `scope`.
    pub fn in_scope(&self, code: &str, scope: &Scope) -> bool {
        match scope {
            Scope::All => true,
            Scope::Unit(root) => self.is_within(code, root),
        }
    }

    /// `code` and every unit below it, parents before children.
    pub fn subtree(&self, code: &str) -> Vec<&OrgUnit> {
        let mut out = Vec::new();
        let mut stack = vec![code];
        while let Some(c) = stack.pop() {
            if let Some(u) = self.units.get(c) {
                out.push(u);
                for child in self.children(c).iter().rev() {
                    stack.push(child);
                }
            }
        }
        out
    }

    /// Units visible in a scope, parents before children.
    pub fn in_scope_units(&self, scope: &Scope) -> Vec<&OrgUnit> {
        match scope {
            Scope::All => {
                let mut out = Vec::new();
                for r in self.roots() {
                    out.extend(self.subtree(&r.code));
                }
                out
            }
            Scope::Unit(root) => self.subtree(root),
        }
    }

    /// Validates an import against this tree and returns the merged tree and
    /// the codes whose parent changed (their subtrees moved).
    ///
    /// # Errors
    /// [`OrgTreeError`] when a unit is malformed, a parent is missing, a code
    /// repeats, or the result would contain a cycle. Nothing changes then.
    pub fn with_upserts(
        &self,
        incoming: &[OrgUnit],
    ) -> Result<(OrgTree, Vec<String>), OrgTreeError> {
        let mut seen = BTreeSet::new();
        for u in incoming {
            validate_unit(u)?;
            if !seen.insert(u.code.as_str()) {
                return Err(OrgTreeError::Duplicate(u.code.clone()));
            }
        }
        let mut next = self.clone();
        let mut moved = Vec::new();
        for u in incoming {
            if let Some(old) = self.units.get(&u.code) {
                if old.parent != u.parent {
                    moved.push(u.code.clone());
                }
            }
            next.units.insert(u.code.clone(), u.clone());
        }
        for u in incoming {
            if let Some(p) = &u.parent {
                if !next.units.contains_key(p) {
                    return Err(OrgTreeError::MissingParent {
                        code: u.code.clone(),
                        parent: p.clone(),
                    });
                }
            }
        }
        // A cycle, if any, passes through an incoming unit: walk up from each.
        for u in incoming {
            let mut cur = u.parent.as_deref();
            let mut steps = 0;
            while let Some(c) = cur {
                if c == u.code || steps > next.units.len() {
                    return Err(OrgTreeError::Cycle(u.code.clone()));
                }
                steps += 1;
                cur = next.units.get(c).and_then(|x| x.parent.as_deref());
            }
        }
        next.reindex();
        Ok((next, moved))
    }
}

fn validate_unit(u: &OrgUnit) -> Result<(), OrgTreeError> {
    let invalid = |reason: &str| OrgTreeError::Invalid {
        code: u.code.clone(),
        reason: reason.to_string(),
    };
    let code_chars = u.code.chars().count();
    if code_chars == 0 || code_chars > ORG_CODE_CHARS_MAX || u.code.chars().any(char::is_control) {
        return Err(invalid(
            "code must be 1..64 characters without control characters",
        ));
    }
    let name_chars = u.name.chars().count();
    if name_chars == 0 || name_chars > ORG_NAME_CHARS_MAX {
        return Err(invalid("name must be 1..200 characters"));
    }
    if u.parent.as_deref() == Some(u.code.as_str()) {
        return Err(OrgTreeError::Cycle(u.code.clone()));
    }
    Ok(())
}

impl UnitType {
    /// Community and village units are grassroots units (coverage, §7).
    pub fn is_grassroots(self) -> bool {
        matches!(self, UnitType::Community | UnitType::Village)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn unit(code: &str, t: UnitType, parent: Option<&str>) -> OrgUnit {
        OrgUnit {
            code: code.into(),
            name: format!("n{code}"),
            unit_type: t,
            parent: parent.map(Into::into),
        }
    }

    fn sample() -> OrgTree {
        OrgTree::default()
            .with_upserts(&[
                unit("v1", UnitType::Village, Some("t1")),
                unit("d", UnitType::District, None),
                unit("t1", UnitType::Town, Some("d")),
                unit("s1", UnitType::Street, Some("d")),
                unit("c1", UnitType::Community, Some("s1")),
            ])
            .unwrap()
            .0
    }

    #[test]
    fn scope_and_subtree() {
        let t = sample();
        assert!(t.is_within("v1", "d"));
        assert!(t.is_within("v1", "t1"));
        assert!(!t.is_within("v1", "s1"));
        assert!(!t.is_within("nope", "d"));
        let codes: Vec<_> = t.subtree("d").iter().map(|u| u.code.as_str()).collect();
        assert_eq!(codes, ["d", "s1", "c1", "t1", "v1"]);
        assert_eq!(t.chain("c1"), ["c1", "s1", "d"]);
    }

    #[test]
    fn rejects_missing_parent_cycle_and_duplicates() {
        let t = sample();
        assert!(matches!(
            t.with_upserts(&[unit("x", UnitType::Village, Some("zz"))]),
            Err(OrgTreeError::MissingParent { .. })
        ));
        assert!(matches!(
            t.with_upserts(&[unit("d", UnitType::District, Some("v1"))]),
            Err(OrgTreeError::Cycle(_))
        ));
        assert!(matches!(
            t.with_upserts(&[unit("a", UnitType::Village, Some("a"))]),
            Err(OrgTreeError::Cycle(_))
        ));
        let dup = [
            unit("a", UnitType::Village, Some("d")),
            unit("a", UnitType::Village, Some("d")),
        ];
        assert!(matches!(
            t.with_upserts(&dup),
            Err(OrgTreeError::Duplicate(_))
        ));
        let (moved, codes) = t
            .with_upserts(&[unit("t1", UnitType::Town, Some("s1"))])
            .unwrap();
        assert_eq!(codes, ["t1"]);
        assert!(moved.is_within("v1", "s1"));
    }
}
