//! Account roles. Each role includes the powers of the ones before it.

use serde::{Deserialize, Serialize};

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Joins lines, holds seats, pays.
    Fan,
    /// Runs a sale: opens, pauses, sets the admission rate, reads the dashboard.
    Operator,
    /// Creates venues and events, grants roles.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Fan => "fan",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fan" => Some(Role::Fan),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Whether a holder of `self` may do what `required` may do.
    pub fn includes(self, required: Role) -> bool {
        self >= required
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_includes_every_role_and_fan_only_itself() {
        assert!(Role::Admin.includes(Role::Operator));
        assert!(Role::Admin.includes(Role::Fan));
        assert!(Role::Operator.includes(Role::Fan));
        assert!(!Role::Fan.includes(Role::Operator));
        assert!(!Role::Operator.includes(Role::Admin));
        for role in [Role::Fan, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
    }
}
