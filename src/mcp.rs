//! MCP vocabulary in one place: the method names mcp-guard reads, the lists it curates and the
//! members of their results (MCP schema revisions 2024-11-05 to 2026-07-28, `schema.ts`;
//! "Server features": Tools, Prompts, Resources; the tasks extension, SEP-2663).
//!
//! Every other module compares against these constants, so a method or member name is spelled
//! once. Comparisons are exact (byte for byte, after the JSON escapes of the wire text are
//! decoded by the reader that found the name).

/// `tools/call`: its `params.name` names a tool (MCP "Server features / Tools").
pub const TOOLS_CALL: &str = "tools/call";
/// `prompts/get`: its `params.name` names a prompt (MCP "Server features / Prompts").
pub const PROMPTS_GET: &str = "prompts/get";
/// `resources/read`: its `params.uri` names a resource (MCP "Server features / Resources").
pub const RESOURCES_READ: &str = "resources/read";
/// `tools/list`: its result's `tools` array is curated per agent ([`ListKind::Tools`]).
pub const TOOLS_LIST: &str = "tools/list";
/// `prompts/list`: its result's `prompts` array is curated per agent ([`ListKind::Prompts`]).
pub const PROMPTS_LIST: &str = "prompts/list";
/// `resources/list`: its result's `resources` array is curated per agent
/// ([`ListKind::Resources`]).
pub const RESOURCES_LIST: &str = "resources/list";

/// `subscriptions/listen` (MCP 2026-07-28, "Subscriptions", SEP-2575): its response is a
/// long-lived `text/event-stream` of notifications, curated per agent as it arrives
/// (`crate::curation::curate_listen_events`).
pub const SUBSCRIPTIONS_LISTEN: &str = "subscriptions/listen";
/// `notifications/resources/updated`: its `params.uri` names a resource that changed (on a
/// `subscriptions/listen` stream from 2026-07-28; on the server stream after
/// `resources/subscribe` before). Dropped for an agent that may not read that resource.
pub const RESOURCES_UPDATED: &str = "notifications/resources/updated";
/// `notifications/subscriptions/acknowledged`: the first message of a `subscriptions/listen`
/// stream, the subscription is open (MCP 2026-07-28, "Subscriptions / Acknowledgment").
pub const SUBSCRIPTIONS_ACKNOWLEDGED: &str = "notifications/subscriptions/acknowledged";

/// MCP task methods whose `params.taskId` is mirrored in the 2026-07-28 `Mcp-Name` header
/// (SEP-2663, tasks extension).
pub const TASK_METHODS: [&str; 3] = ["tasks/get", "tasks/update", "tasks/cancel"];

/// Every MCP method mcp-guard knows by name: each JSON-RPC request and notification method of
/// the MCP schema revisions 2024-11-05, 2025-03-26, 2025-06-18, 2025-11-25 and 2026-07-28
/// (`schema/<revision>/schema.ts`, both directions), plus the methods of the tasks extension
/// (SEP-2663: `tasks/update`, `notifications/tasks`). A method outside this list is still decided
/// by policy; it only has no stat label of its own (`crate::metrics::method_label`: `other`).
pub const MCP_METHODS: [&str; 36] = [
    // Lifecycle and utilities.
    "initialize",
    "notifications/initialized",
    "server/discover",
    "ping",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "logging/setLevel",
    "completion/complete",
    // Tools, prompts, resources.
    TOOLS_CALL,
    TOOLS_LIST,
    "notifications/tools/list_changed",
    PROMPTS_GET,
    PROMPTS_LIST,
    "notifications/prompts/list_changed",
    RESOURCES_READ,
    RESOURCES_LIST,
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
    "notifications/resources/list_changed",
    RESOURCES_UPDATED,
    SUBSCRIPTIONS_LISTEN,
    SUBSCRIPTIONS_ACKNOWLEDGED,
    // Client features (server-to-client requests).
    "sampling/createMessage",
    "elicitation/create",
    "notifications/elicitation/complete",
    "roots/list",
    "notifications/roots/list_changed",
    // Tasks (2025-11-25, and the tasks extension).
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "tasks/update",
    "notifications/tasks/status",
    "notifications/tasks",
];

/// The `result` member of a `tools/list` response holding the tool array.
pub const TOOLS: &str = "tools";
/// The `result` member of a `prompts/list` response holding the prompt array.
pub const PROMPTS: &str = "prompts";
/// The `result` member of a `resources/list` response holding the resource array.
pub const RESOURCES: &str = "resources";
/// The `result` member of a paginated list response naming the next page (an opaque string);
/// kept as it is by curation.
pub const NEXT_CURSOR: &str = "nextCursor";
/// The member of a tool or prompt entry (and of `tools/call` / `prompts/get` params) that names
/// it: a string.
pub const NAME: &str = "name";
/// The member of a resource entry (and of `resources/read` params) that names it: a URI string.
pub const URI: &str = "uri";
/// The member of a tool entry holding its behaviour hints (`ToolAnnotations`: `readOnlyHint`,
/// `destructiveHint`, booleans).
pub const ANNOTATIONS: &str = "annotations";
/// The member of a list result (MCP 2026-07-28, SEP-2549 "cache hints") that says whether a
/// client or shared cache may serve the result across authorization contexts (`"public"`) or
/// only within the one that produced it (`"private"`); a sibling of the list array in `result`.
pub const CACHE_SCOPE: &str = "cacheScope";

/// The member of a cacheable result (MCP 2026-07-28, SEP-2549 "cache hints": `server/discover`,
/// the four list methods, `resources/read`) giving how long, in milliseconds, a client may
/// consider it fresh (an integer `>= 0`). mcp-guard keeps it as the server sent it.
pub const TTL_MS: &str = "ttlMs";

/// Which list a request asks for: the three MCP list methods whose results mcp-guard curates
/// per agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list` → `result.tools[].name`.
    Tools,
    /// `prompts/list` → `result.prompts[].name`.
    Prompts,
    /// `resources/list` → `result.resources[].uri`.
    Resources,
}

impl ListKind {
    /// Every list kind, in the order above.
    pub const ALL: [ListKind; 3] = [ListKind::Tools, ListKind::Prompts, ListKind::Resources];

    /// The list a method returns (exact comparison), if it is one of the curated ones.
    pub fn of(method: &str) -> Option<ListKind> {
        match method {
            TOOLS_LIST => Some(ListKind::Tools),
            PROMPTS_LIST => Some(ListKind::Prompts),
            RESOURCES_LIST => Some(ListKind::Resources),
            _ => None,
        }
    }

    /// The result member holding the list ([`TOOLS`], [`PROMPTS`], [`RESOURCES`]).
    pub fn array(self) -> &'static str {
        match self {
            ListKind::Tools => TOOLS,
            ListKind::Prompts => PROMPTS,
            ListKind::Resources => RESOURCES,
        }
    }

    /// The entry member that names an entry: [`NAME`] for tools and prompts, [`URI`] for
    /// resources.
    pub fn key(self) -> &'static str {
        match self {
            ListKind::Tools | ListKind::Prompts => NAME,
            ListKind::Resources => URI,
        }
    }
}
