#![doc = include_str!("../README.md")]

pub mod access;
pub mod access_service;
pub mod actor;
pub mod audit;
pub mod changes;
pub mod cluster;
pub mod deployment;
pub mod deployment_plan;
pub mod deployment_service;
pub mod dora;
pub mod engine;
pub mod lease;
pub mod notification;
pub mod observer;
pub mod pagination;
pub mod ports;
pub mod release;
pub mod release_service;
pub mod snapshot;
pub mod template;
pub mod token;
pub mod validation;

pub use access::{AccessDenied, Caller, Grant, Permission, Principal, Role, Scope};
pub use actor::Actor;
pub use audit::{AuditAction, AuditEntry, AuditQuery};
pub use pagination::{Cursor, Page, PageLimit};
pub use release::{
    AttributeName, Attributes, ImageRef, NewRelease, Release, ReleaseContent, ReleaseId,
    ReleaseQuery, ReleaseSummary, ServiceName, UnvalidatedRelease, Version,
};
pub use release_service::{
    CreateReleaseError, CreatedRelease, DeleteReleaseError, GetReleaseError, ListReleasesError,
    ReleaseService,
};
pub use template::{ManifestTemplate, RenderError, RenderedManifest, TemplateVariables};
pub use validation::{FieldError, ValidationErrors};
