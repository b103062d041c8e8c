//! The classic consumer-group coordinator: membership, generations, the join → sync
//! rebalance barrier, session timeouts. Assignment itself is done by the group leader on the
//! client side (range, roundrobin, cooperative-sticky all work). Membership lives in memory:
//! after a broker restart members simply rejoin; committed offsets live in the core.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use core_stream::Core;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;

use crate::errors::code;
use crate::KafkaBroker;

/// Group states, named as DescribeGroups reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Assignment delivered.
    Stable,
}

impl GroupState {
    /// Name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Empty => "Empty",
            Self::PreparingRebalance => "PreparingRebalance",
            Self::CompletingRebalance => "CompletingRebalance",
            Self::Stable => "Stable",
        }
    }
}

/// What a member learns when a join round completes.
#[derive(Debug, Clone)]
pub struct JoinResult {
    /// Error code (0 on success).
    pub error: i16,
    /// New generation.
    pub generation: i32,
    /// Chosen assignment protocol.
    pub protocol: Option<String>,
    /// Protocol type (normally "consumer").
    pub protocol_type: Option<String>,
    /// Leader member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// What a member learns when the sync barrier completes.
#[derive(Debug, Clone)]
pub struct SyncResult {
    /// Error code.
    pub error: i16,
    /// This member's assignment.
    pub assignment: Bytes,
    /// Chosen protocol.
    pub protocol: Option<String>,
    /// Protocol type.
    pub protocol_type: Option<String>,
}

/// A join request, reduced to what the coordinator needs.
#[derive(Debug)]
pub struct JoinRequest {
    /// Group id.
    pub group: String,
    /// Member id ("" for a new member).
    pub member_id: String,
    /// Static membership id, if any.
    pub instance_id: Option<String>,
    /// Client id from the request header.
    pub client_id: String,
    /// Protocol type ("consumer").
    pub protocol_type: String,
    /// Supported protocols in preference order, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Rebalance timeout.
    pub rebalance_timeout: Duration,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    protocols: Vec<(String, Bytes)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    assignment: Bytes,
    joined: bool,
    join_waiter: Option<oneshot::Sender<JoinResult>>,
    sync_waiter: Option<oneshot::Sender<SyncResult>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Join order, so the first joiner leads.
    order: Vec<String>,
    rebalance_deadline: Instant,
    not_before: Instant,
}

impl Group {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            order: Vec::new(),
            rebalance_deadline: now,
            not_before: now,
        }
    }

    fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(w) = m.join_waiter {
                let _ = w.send(JoinResult::error(code::UNKNOWN_MEMBER_ID, id));
            }
            if let Some(w) = m.sync_waiter {
                let _ = w.send(SyncResult::error(code::UNKNOWN_MEMBER_ID));
            }
        }
        self.order.retain(|m| m != id);
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// Starts (or continues) a rebalance: every member must rejoin.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(code::REBALANCE_IN_PROGRESS));
                    // It was alive while it waited (clients don't heartbeat inside SyncGroup):
                    // its session starts now, so it has time to rejoin.
                    m.last_seen = now;
                }
            }
        }
        if self.state != GroupState::PreparingRebalance {
            let timeout = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or_default();
            self.rebalance_deadline = now + timeout;
            for m in self.members.values_mut() {
                m.joined = m.join_waiter.is_some();
            }
        }
        self.state = GroupState::PreparingRebalance;
    }

    /// Completes the join round if everyone is in (or `force` after the rebalance timeout).
    fn try_complete_join(&mut self, now: Instant, force: bool) {
        if self.state != GroupState::PreparingRebalance || now < self.not_before {
            return;
        }
        let all_in = self.members.values().all(|m| m.joined);
        if !all_in && !force {
            return;
        }
        let missing: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.joined)
            .map(|(k, _)| k.clone())
            .collect();
        for id in missing {
            self.remove_member(&id);
        }
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.order.first().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        // First protocol of the leader's preference list that every member supports.
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            });
        self.protocol = protocol.clone();
        let members: Vec<(String, Option<String>, Bytes)> = self
            .order
            .iter()
            .filter_map(|id| {
                let m = self.members.get(id)?;
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| Some(n) == protocol.as_ref())
                    .map(|(_, md)| md.clone());
                Some((id.clone(), m.instance_id.clone(), meta.unwrap_or_default()))
            })
            .collect();
        self.state = GroupState::CompletingRebalance;
        for (id, m) in self.members.iter_mut() {
            m.joined = false;
            m.last_seen = now;
            m.assignment = Bytes::new();
            if let Some(w) = m.join_waiter.take() {
                let _ = w.send(JoinResult {
                    error: code::NONE,
                    generation: self.generation,
                    protocol: protocol.clone(),
                    protocol_type: self.protocol_type.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        members.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
        info!(group.generation = self.generation, members = self.members.len(), protocol = ?self.protocol, "group rebalanced");
    }
}

impl JoinResult {
    fn error(error: i16, member_id: &str) -> Self {
        Self {
            error,
            generation: -1,
            protocol: None,
            protocol_type: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

impl SyncResult {
    fn error(error: i16) -> Self {
        Self {
            error,
            assignment: Bytes::new(),
            protocol: None,
            protocol_type: None,
        }
    }
}

/// A snapshot of a group for DescribeGroups.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// State.
    pub state: GroupState,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol: String,
    /// (member id, instance id, client id, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, Bytes, Bytes)>,
}

/// All groups of this broker.
#[derive(Debug)]
pub struct GroupCoordinator {
    core: Arc<Core>,
    groups: Mutex<HashMap<String, Group>>,
    initial_delay: Duration,
    next_member: AtomicU64,
    /// Set at shutdown: joins and syncs are answered NOT_COORDINATOR at once.
    closed: std::sync::atomic::AtomicBool,
}

impl GroupCoordinator {
    /// A coordinator whose new groups wait `initial_delay` before their first generation.
    pub fn new(core: Arc<Core>, initial_delay: Duration) -> Self {
        Self {
            core,
            groups: Mutex::new(HashMap::new()),
            initial_delay,
            next_member: AtomicU64::new(1),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Joins (or rejoins) a member; resolves when the round completes.
    pub fn join(&self, req: JoinRequest) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let now = Instant::now();
        let mut groups = self.lock();
        if self.closed.load(Ordering::Acquire) {
            let _ = tx.send(JoinResult::error(code::NOT_COORDINATOR, &req.member_id));
            return rx;
        }
        let g = groups.entry(req.group.clone()).or_insert_with(Group::new);
        if req.protocols.is_empty()
            || g.protocol_type
                .as_ref()
                .is_some_and(|t| *t != req.protocol_type && !g.members.is_empty())
            || (!g.members.is_empty()
                && !req.protocols.iter().any(|(p, _)| {
                    g.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(q, _)| q == p))
                }))
        {
            let _ = tx.send(JoinResult::error(
                code::INCONSISTENT_GROUP_PROTOCOL,
                &req.member_id,
            ));
            return rx;
        }
        let member_id = if req.member_id.is_empty() {
            let n = self.next_member.fetch_add(1, Ordering::Relaxed);
            format!(
                "{}-{:x}-{n}",
                if req.client_id.is_empty() {
                    "member"
                } else {
                    &req.client_id
                },
                std::process::id()
            )
        } else if g.members.contains_key(&req.member_id) {
            req.member_id.clone()
        } else {
            let _ = tx.send(JoinResult::error(code::UNKNOWN_MEMBER_ID, &req.member_id));
            return rx;
        };
        // A follower rejoining with unchanged metadata while the group is stable (or waiting
        // for the leader's assignment) gets the current generation, not a rebalance — as
        // Kafka's coordinator answers ("no actual change to their metadata").
        if matches!(
            g.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) && g.leader.as_deref() != Some(member_id.as_str())
        {
            if let Some(m) = g.members.get_mut(&member_id) {
                if m.protocols == req.protocols {
                    m.last_seen = now;
                    m.session_timeout = req.session_timeout;
                    m.rebalance_timeout = req.rebalance_timeout;
                    let _ = tx.send(JoinResult {
                        error: code::NONE,
                        generation: g.generation,
                        protocol: g.protocol.clone(),
                        protocol_type: g.protocol_type.clone(),
                        leader: g.leader.clone().unwrap_or_default(),
                        member_id,
                        members: Vec::new(),
                    });
                    return rx;
                }
            }
        }
        if g.members.is_empty() {
            g.protocol_type = Some(req.protocol_type.clone());
            if g.state == GroupState::Empty {
                g.not_before = now + self.initial_delay;
            }
        }
        let m = g
            .members
            .entry(member_id.clone())
            .or_insert_with(|| Member {
                instance_id: req.instance_id.clone(),
                client_id: req.client_id.clone(),
                protocols: Vec::new(),
                session_timeout: req.session_timeout,
                rebalance_timeout: req.rebalance_timeout,
                last_seen: now,
                assignment: Bytes::new(),
                joined: false,
                join_waiter: None,
                sync_waiter: None,
            });
        if let Some(old) = m.join_waiter.take() {
            let _ = old.send(JoinResult::error(code::REBALANCE_IN_PROGRESS, &member_id));
        }
        m.protocols = req.protocols;
        m.session_timeout = req.session_timeout;
        m.rebalance_timeout = req.rebalance_timeout;
        m.last_seen = now;
        m.join_waiter = Some(tx);
        if !g.order.contains(&member_id) {
            g.order.push(member_id.clone());
        }
        g.prepare_rebalance(now);
        if let Some(m) = g.members.get_mut(&member_id) {
            m.joined = true;
        }
        g.try_complete_join(now, false);
        rx
    }

    /// Delivers the leader's assignment / waits for it.
    pub fn sync(
        &self,
        group: &str,
        member: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        let mut groups = self.lock();
        if self.closed.load(Ordering::Acquire) {
            let _ = tx.send(SyncResult::error(code::NOT_COORDINATOR));
            return rx;
        }
        let Some(g) = groups.get_mut(group) else {
            let _ = tx.send(SyncResult::error(code::UNKNOWN_MEMBER_ID));
            return rx;
        };
        if !g.members.contains_key(member) {
            let _ = tx.send(SyncResult::error(code::UNKNOWN_MEMBER_ID));
            return rx;
        }
        if generation != g.generation {
            let _ = tx.send(SyncResult::error(code::ILLEGAL_GENERATION));
            return rx;
        }
        let ok = |g: &Group, a: Bytes| SyncResult {
            error: code::NONE,
            assignment: a,
            protocol: g.protocol.clone(),
            protocol_type: g.protocol_type.clone(),
        };
        match g.state {
            GroupState::Empty | GroupState::PreparingRebalance => {
                let _ = tx.send(SyncResult::error(code::REBALANCE_IN_PROGRESS));
            }
            GroupState::Stable => {
                let a = g.members[member].assignment.clone();
                let _ = tx.send(ok(g, a));
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = g.members.get_mut(member) {
                    m.sync_waiter = Some(tx);
                    m.last_seen = Instant::now();
                }
                if g.leader.as_deref() == Some(member) {
                    for (id, a) in assignments {
                        if let Some(m) = g.members.get_mut(&id) {
                            m.assignment = a;
                        }
                    }
                    g.state = GroupState::Stable;
                    let (protocol, protocol_type) = (g.protocol.clone(), g.protocol_type.clone());
                    for m in g.members.values_mut() {
                        if let Some(w) = m.sync_waiter.take() {
                            let _ = w.send(SyncResult {
                                error: code::NONE,
                                assignment: m.assignment.clone(),
                                protocol: protocol.clone(),
                                protocol_type: protocol_type.clone(),
                            });
                        }
                    }
                }
            }
        }
        rx
    }

    /// Keeps a member alive; tells it to rejoin during a rebalance.
    pub fn heartbeat(&self, group: &str, member: &str, generation: i32) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let state = g.state;
        let current = g.generation;
        let Some(m) = g.members.get_mut(member) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = Instant::now();
        if state == GroupState::PreparingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        if generation != current {
            return code::ILLEGAL_GENERATION;
        }
        code::NONE
    }

    /// Removes members; the rest rebalance.
    pub fn leave(&self, group: &str, members: &[String]) -> Vec<i16> {
        let now = Instant::now();
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return vec![code::UNKNOWN_MEMBER_ID; members.len()];
        };
        let codes = members
            .iter()
            .map(|id| {
                if g.members.contains_key(id) {
                    g.remove_member(id);
                    code::NONE
                } else {
                    code::UNKNOWN_MEMBER_ID
                }
            })
            .collect();
        Self::after_membership_change(g, now);
        codes
    }

    fn after_membership_change(g: &mut Group, now: Instant) {
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.leader = None;
            g.protocol = None;
            g.generation += 1;
        } else {
            g.prepare_rebalance(now);
            g.try_complete_join(now, false);
        }
    }

    /// Validates an OffsetCommit's generation/member. `generation < 0` is a commit from outside
    /// group management (manual assignment, kcat): always allowed.
    pub fn check_commit(&self, group: &str, member: &str, generation: i32) -> i16 {
        if generation < 0 {
            return code::NONE;
        }
        let groups = self.lock();
        let Some(g) = groups.get(group) else {
            return code::ILLEGAL_GENERATION;
        };
        if !g.members.contains_key(member) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        code::NONE
    }

    /// Groups known to the coordinator or with committed offsets, with their state.
    pub fn list(&self) -> Vec<(String, GroupState, String)> {
        let mut out: BTreeMap<String, (GroupState, String)> = BTreeMap::new();
        if let Ok(names) = self.core.groups_with_offsets() {
            for n in names {
                out.insert(n, (GroupState::Empty, "consumer".into()));
            }
        }
        for (n, g) in self.lock().iter() {
            out.insert(
                n.clone(),
                (
                    g.state,
                    g.protocol_type.clone().unwrap_or_else(|| "consumer".into()),
                ),
            );
        }
        out.into_iter().map(|(n, (s, t))| (n, s, t)).collect()
    }

    /// A group's description, if the coordinator knows it.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let groups = self.lock();
        let g = groups.get(group)?;
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            members: g
                .order
                .iter()
                .filter_map(|id| {
                    let m = g.members.get(id)?;
                    let meta = m
                        .protocols
                        .iter()
                        .find(|(n, _)| Some(n) == g.protocol.as_ref())
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default();
                    Some((
                        id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        meta,
                        m.assignment.clone(),
                    ))
                })
                .collect(),
        })
    }

    /// Answers every member waiting in a join or sync with NOT_COORDINATOR (the broker is
    /// stopping), so their connections can finish and close promptly.
    pub fn close(&self) {
        let mut groups = self.lock();
        self.closed.store(true, Ordering::Release);
        for g in groups.values_mut() {
            for (id, m) in g.members.iter_mut() {
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(JoinResult::error(code::NOT_COORDINATOR, id));
                }
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(SyncResult::error(code::NOT_COORDINATOR));
                }
            }
        }
    }

    /// Deletes a group's committed offsets unless it has members; checked and done under the
    /// coordinator lock, so no member can join in between. Returns the Kafka error code.
    pub fn delete(&self, group: &str) -> i16 {
        let mut groups = self.lock();
        if groups.get(group).is_some_and(|g| !g.members.is_empty()) {
            return code::NON_EMPTY_GROUP;
        }
        let has_offsets = self
            .core
            .groups_with_offsets()
            .map(|g| g.iter().any(|n| n == group));
        match has_offsets {
            Ok(false) if !groups.contains_key(group) => code::GROUP_ID_NOT_FOUND,
            Ok(_) => match self.core.delete_group_offsets(group) {
                Ok(()) => {
                    groups.remove(group);
                    code::NONE
                }
                Err(e) => crate::errors::error_code(&e),
            },
            Err(e) => crate::errors::error_code(&e),
        }
    }

    /// Expires silent members and completes overdue join rounds. Called by [`run_timers`].
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.lock();
        for g in groups.values_mut() {
            match g.state {
                GroupState::PreparingRebalance => {
                    // A member that has not rejoined and has gone silent for its session
                    // timeout is gone (crashed): don't hold the round for the rebalance timeout.
                    let silent: Vec<String> = g
                        .members
                        .iter()
                        .filter(|(_, m)| {
                            !m.joined && now.duration_since(m.last_seen) > m.session_timeout
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    for id in &silent {
                        g.remove_member(id);
                    }
                    if !silent.is_empty() {
                        info!(members = ?silent, "session timeout during rebalance: removing members");
                    }
                    let force = now >= g.rebalance_deadline;
                    g.try_complete_join(now, force);
                }
                GroupState::Stable | GroupState::CompletingRebalance => {
                    let expired: Vec<String> = g
                        .members
                        .iter()
                        .filter(|(_, m)| {
                            m.sync_waiter.is_none()
                                && now.duration_since(m.last_seen) > m.session_timeout
                        })
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !expired.is_empty() {
                        info!(members = ?expired, "session timeout: removing members");
                        for id in &expired {
                            g.remove_member(id);
                        }
                        Self::after_membership_change(g, now);
                    }
                }
                GroupState::Empty => {}
            }
        }
        // Forget groups with no members (their committed offsets live in the core).
        groups.retain(|_, g| g.state != GroupState::Empty || !g.members.is_empty());
    }
}

/// Drives group timers (session and rebalance timeouts) every 50 ms until the broker stops.
pub async fn run_timers(b: Arc<KafkaBroker>) {
    let mut shutdown = b.shutdown.clone();
    let mut every = tokio::time::interval(Duration::from_millis(50));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = every.tick() => b.groups.tick(),
            _ = shutdown.wait() => {
                b.groups.close();
                return;
            }
        }
    }
}
