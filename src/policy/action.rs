//! The actions a request is checked against: what the CEL policies see as
//! `request.action`. The API's route table maps each endpoint and method to one of them.

/// The policy action a request is checked against (names as in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    GetApiVersion,
    PutBlob,
    GetBlob,
    DeleteBlob,
    PutManifest,
    GetManifest,
    DeleteManifest,
    GetReferrers,
    ListCatalog,
    ListTags,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::GetApiVersion => "get-api-version",
            Action::PutBlob => "put-blob",
            Action::GetBlob => "get-blob",
            Action::DeleteBlob => "delete-blob",
            Action::PutManifest => "put-manifest",
            Action::GetManifest => "get-manifest",
            Action::DeleteManifest => "delete-manifest",
            Action::GetReferrers => "get-referrers",
            Action::ListCatalog => "list-catalog",
            Action::ListTags => "list-tags",
        }
    }

    /// Actions that change a repository (refused in a read-only mirror).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Action::PutBlob | Action::DeleteBlob | Action::PutManifest | Action::DeleteManifest
        )
    }

    #[cfg(test)]
    pub const ALL: [Action; 10] = [
        Action::GetApiVersion,
        Action::PutBlob,
        Action::GetBlob,
        Action::DeleteBlob,
        Action::PutManifest,
        Action::GetManifest,
        Action::DeleteManifest,
        Action::GetReferrers,
        Action::ListCatalog,
        Action::ListTags,
    ];
}
