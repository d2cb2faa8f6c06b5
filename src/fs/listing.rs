//! Listings, a part of `ops`: the vaults and a vault's points (re-read after the refresh
//! interval, with kernel invalidations when they change), a point's backups, and the
//! entries of a directory inside a backup (its tree chunk, loaded once). Each listing
//! allocates the inodes of what it lists; identity rules are in `inodes.rs`.

use super::*;

impl VaultFs {
    /// Whether a list must be (re-)read before it answers: when it never was, or, without
    /// the background refresher, when it is older than the refresh interval.
    fn must_refresh(&self, refreshed: Option<Instant>) -> bool {
        match refreshed {
            None => true,
            Some(t) => !self.opts.background_refresh && t.elapsed() >= self.opts.refresh,
        }
    }

    /// The vaults. Read on first use; then re-read after the refresh interval, by the
    /// caller or (with `background_refresh`) by [`VaultFs::refresh_lists`].
    pub(super) fn vaults(&self, root: &Mutex<VaultList>) -> Result<Vec<(String, u64)>> {
        let refreshed = lock(root).refreshed;
        if self.must_refresh(refreshed) {
            let listed = self.repo.list_vaults();
            self.apply_vaults(root, listed)?;
        }
        Ok(lock(root).names.clone())
    }

    /// Installs a fresh listing of the vaults (read without holding the list's lock, so a
    /// slow store holds up no lookup of a list already known).
    fn apply_vaults(
        &self,
        root: &Mutex<VaultList>,
        listed: crate::repo::Result<Vec<String>>,
    ) -> Result<()> {
        let mut list = lock(root);
        let names = match listed {
            Ok(names) => names,
            Err(e) if list.refreshed.is_some() => {
                tracing::warn!("listing vaults failed, keeping the previous list: {e}");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let old: Vec<String> = list.names.iter().map(|(n, _)| n.clone()).collect();
        list.names = names
            .into_iter()
            .map(|name| {
                let ino = self.inodes.get_or_alloc(Key::Vault(name.clone()), || {
                    (
                        ROOT_INO,
                        name.clone().into_bytes(),
                        Body::Vault(VaultDir {
                            name: name.clone(),
                            points: Mutex::new(PointList::default()),
                        }),
                    )
                });
                (name, ino)
            })
            .collect();
        self.invalidate_gone(ROOT_INO, &old, &list.names);
        if old.len() != list.names.len() {
            self.invalidate(Inval::Inode(ROOT_INO));
        }
        list.refreshed = Some(Instant::now());
        Ok(())
    }

    /// A vault's points (oldest first); refreshed like [`VaultFs::vaults`]. When the list
    /// changes, the kernel's entries for `latest` and vanished points are invalidated.
    pub(super) fn points(&self, vault_ino: u64, v: &VaultDir) -> Result<Vec<(String, u64)>> {
        let refreshed = lock(&v.points).refreshed;
        if self.must_refresh(refreshed) {
            let listed = self.repo.list_points(&v.name);
            self.apply_points(vault_ino, v, listed)?;
        }
        Ok(lock(&v.points).names.clone())
    }

    fn apply_points(
        &self,
        vault_ino: u64,
        v: &VaultDir,
        listed: crate::repo::Result<Vec<String>>,
    ) -> Result<()> {
        let mut list = lock(&v.points);
        let names = match listed {
            Ok(names) => names,
            Err(e) if list.refreshed.is_some() => {
                tracing::warn!(vault = %v.name, "listing points failed, keeping the previous list: {e}");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let old_latest = list.latest().map(str::to_string);
        let old: Vec<String> = list.names.iter().map(|(n, _)| n.clone()).collect();
        let mut fresh = Vec::with_capacity(names.len());
        for name in names {
            let ino = match list.by_name.get(&name) {
                Some(&ino) => ino,
                None => {
                    let ino = self.inodes.alloc(
                        vault_ino,
                        name.clone().into_bytes(),
                        Body::Point(PointDir {
                            vault: v.name.clone(),
                            point: name.clone(),
                            time_ns: point_time(&name).unwrap_or(self.started_ns),
                            backups: Mutex::new(None),
                        }),
                    );
                    list.by_name.insert(name.clone(), ino);
                    ino
                }
            };
            fresh.push((name, ino));
        }
        list.names = fresh;
        self.invalidate_gone(vault_ino, &old, &list.names);
        if list.latest().map(str::to_string) != old_latest {
            let latest = self.latest_ino(vault_ino, &v.name);
            self.invalidate(Inval::Entry {
                parent: vault_ino,
                name: b"latest".to_vec(),
            });
            self.invalidate(Inval::Inode(latest));
            self.invalidate(Inval::Inode(vault_ino));
        }
        list.refreshed = Some(Instant::now());
        Ok(())
    }

    /// Drops the kernel's entries of names in `old` that `now` no longer has.
    fn invalidate_gone(&self, parent: u64, old: &[String], now: &[(String, u64)]) {
        for gone in old.iter().filter(|o| !now.iter().any(|(n, _)| n == *o)) {
            self.invalidate(Inval::Entry {
                parent,
                name: gone.clone().into_bytes(),
            });
        }
    }

    /// Re-reads the vault list and every point list read so far, outside their locks:
    /// the background refresher calls this every refresh interval, so that lookups answer
    /// from memory even while the store is slow or unreachable.
    pub fn refresh_lists(&self) {
        let Some(root) = self.inodes.get(ROOT_INO) else {
            return;
        };
        let Body::Root(vaults) = &root.body else {
            return;
        };
        if lock(vaults).refreshed.is_none() {
            return;
        }
        if let Err(e) = self.apply_vaults(vaults, self.repo.list_vaults()) {
            tracing::warn!("refreshing the vault list: {e:?}");
        }
        let known: Vec<u64> = lock(vaults).names.iter().map(|(_, i)| *i).collect();
        for ino in known {
            let Some(inode) = self.inodes.get(ino) else {
                continue;
            };
            let Body::Vault(v) = &inode.body else {
                continue;
            };
            if lock(&v.points).refreshed.is_none() {
                continue;
            }
            let listed = self.repo.list_points(&v.name);
            if let Err(e) = self.apply_points(ino, v, listed) {
                tracing::warn!(vault = %v.name, "refreshing points: {e:?}");
            }
        }
    }

    pub(super) fn latest_ino(&self, vault_ino: u64, vault: &str) -> u64 {
        self.inodes
            .get_or_alloc(Key::Latest(vault.to_string()), || {
                (
                    vault_ino,
                    b"latest".to_vec(),
                    Body::Latest { vault: vault_ino },
                )
            })
    }

    /// The name of a vault's newest point (what `latest` points to).
    pub(super) fn latest_target(&self, vault_ino: u64) -> Result<String> {
        let inode = self.inode(vault_ino)?;
        let Body::Vault(v) = &inode.body else {
            return Err(FsError::Invalid);
        };
        let points = self.points(vault_ino, v)?;
        points
            .last()
            .map(|(n, _)| n.clone())
            .ok_or(FsError::NotFound)
    }

    /// Loads a tree chunk through the cache; a failure is logged once here, with the
    /// directory (`ino`) it lists and the chunk.
    pub(super) fn load_tree(&self, ino: u64, r: &ChunkRef) -> Result<Tree> {
        let tree = self.cache.get(r).map_err(FsError::from).and_then(|data| {
            decode_object(&data).map_err(|e| RepoError::damaged(format!("tree {}", r.id), e).into())
        });
        if let Err(e) = &tree {
            tracing::error!(
                dir = %self.inodes.path(ino),
                ino,
                chunk = %r.id,
                pack = %r.pack.to_hex(),
                "listing failed: {e}"
            );
        }
        tree
    }

    /// The backups of a point: its manifest and each backup's top tree, loaded once.
    pub(super) fn backups(&self, ino: u64, p: &PointDir) -> Result<Listing> {
        self.load_backups(ino, p).map(|(l, _)| l)
    }

    /// The backups of a point, and the names of those whose top tree could not be read
    /// with the error. A damaged backup is left out of the listing (logged by
    /// `load_tree`) while its siblings are served; such a listing is not kept, so the
    /// next one retries, and the backups that did load keep their inode numbers.
    pub(super) fn load_backups(&self, ino: u64, p: &PointDir) -> Result<(Listing, BrokenBackups)> {
        let mut g = lock(&p.backups);
        if let Some(l) = g.as_ref() {
            return Ok((l.clone(), Vec::new()));
        }
        let m = self.repo.load_manifest(&p.vault, &p.point)?;
        let mut out = Vec::with_capacity(m.backups.len());
        let mut broken = Vec::new();
        for b in &m.backups {
            let key = Key::Backup {
                point: ino,
                name: b.name.clone(),
            };
            if let Some(child) = self.inodes.find(&key) {
                out.push((b.name.clone(), child));
                continue;
            }
            let top = self.load_tree(ino, &b.root).and_then(|tree| {
                tree.nodes.into_iter().next().ok_or_else(|| {
                    FsError::from(RepoError::damaged(
                        format!("tree {}", b.root.id),
                        "empty backup root",
                    ))
                })
            });
            match top {
                Ok(mut node) => {
                    node.name = b.name.clone();
                    let child = self.inodes.get_or_alloc(key, || {
                        (ino, b.name.clone(), Body::Node(TreeNode::new(node, 0)))
                    });
                    out.push((b.name.clone(), child));
                }
                Err(e) => broken.push((b.name.clone(), e)),
            }
        }
        if !m.backups.is_empty() && out.is_empty() {
            return Err(broken.swap_remove(0).1);
        }
        let l = Arc::new(out);
        if broken.is_empty() {
            *g = Some(l.clone());
        }
        Ok((l, broken))
    }

    /// The entries of a directory inside a backup, loaded from its tree chunk once.
    pub(super) fn tree_children(&self, ino: u64, t: &TreeNode) -> Result<Listing> {
        if t.node.kind != NodeKind::Dir {
            return Err(FsError::NotDir);
        }
        let mut g = lock(&t.children);
        if let Some(l) = g.as_ref() {
            return Ok(l.clone());
        }
        let nodes = match &t.node.subtree {
            Some(r) => self.load_tree(ino, r)?.nodes,
            None => Vec::new(),
        };
        let backup = t.backup_ino(ino);
        let mut out = Vec::with_capacity(nodes.len());
        for n in nodes {
            let name = n.name.clone();
            let child = match (n.kind, n.hardlink) {
                (NodeKind::File, Some((group, _))) => self
                    .inodes
                    .get_or_alloc(Key::Hardlink { backup, group }, || {
                        (ino, name.clone(), Body::Node(TreeNode::new(n, backup)))
                    }),
                _ => self
                    .inodes
                    .alloc(ino, name.clone(), Body::Node(TreeNode::new(n, backup))),
            };
            out.push((name, child));
        }
        let l = Arc::new(out);
        *g = Some(l.clone());
        Ok(l)
    }

    pub(super) fn control_ino(&self, parent: u64, name: &[u8], c: Control) -> u64 {
        self.inodes.get_or_alloc(Key::Control(c.clone()), || {
            (parent, name.to_vec(), Body::Control(c))
        })
    }

    /// Children of a directory inode (without `.` and `..`).
    pub(super) fn children(&self, inode: &Inode) -> Result<Vec<(Vec<u8>, u64)>> {
        let ino = inode.ino;
        Ok(match &inode.body {
            Body::Root(list) => {
                let mut v = vec![(CONTROL_NAME.to_vec(), CONTROL_INO)];
                v.extend(
                    self.vaults(list)?
                        .into_iter()
                        .map(|(n, i)| (n.into_bytes(), i)),
                );
                v
            }
            Body::Vault(vd) => {
                let points = self.points(ino, vd)?;
                let has_latest = !points.is_empty();
                let mut v: Vec<(Vec<u8>, u64)> = points
                    .into_iter()
                    .map(|(n, i)| (n.into_bytes(), i))
                    .collect();
                if has_latest {
                    v.push((b"latest".to_vec(), self.latest_ino(ino, &vd.name)));
                }
                v
            }
            Body::Point(p) => self.backups(ino, p)?.as_ref().clone(),
            Body::Node(t) => self.tree_children(ino, t)?.as_ref().clone(),
            Body::Latest { .. } => return Err(FsError::NotDir),
            Body::Control(c) => match c {
                Control::Top => vec![
                    (
                        b"vaults".to_vec(),
                        self.control_ino(ino, b"vaults", Control::Vaults),
                    ),
                    (
                        b"points".to_vec(),
                        self.control_ino(ino, b"points", Control::Points),
                    ),
                    (
                        b"incoming".to_vec(),
                        self.control_ino(ino, b"incoming", Control::Incoming),
                    ),
                    (
                        b"tasks".to_vec(),
                        self.control_ino(ino, b"tasks", Control::Tasks),
                    ),
                    (
                        b"stats.json".to_vec(),
                        self.control_ino(ino, b"stats.json", Control::Stats),
                    ),
                ],
                Control::Incoming => self
                    .repo
                    .list_vaults()?
                    .into_iter()
                    .map(|v| {
                        let name = v.clone().into_bytes();
                        let i = self.control_ino(ino, &name, Control::IncomingVault(v));
                        (name, i)
                    })
                    .collect(),
                Control::IncomingVault(v) => self.incoming_files(v),
                Control::Tasks => self
                    .tasks
                    .list()
                    .into_iter()
                    .map(|t| {
                        let name = format!("{}.json", t.id).into_bytes();
                        let i = self.control_ino(ino, &name, Control::TaskJson(t.id.clone()));
                        (name, i)
                    })
                    .collect(),
                Control::Vaults => self
                    .repo
                    .list_vaults()?
                    .into_iter()
                    .map(|v| {
                        let name = format!("{v}.json").into_bytes();
                        let i = self.control_ino(ino, &name, Control::VaultJson(v));
                        (name, i)
                    })
                    .collect(),
                Control::Points => self
                    .repo
                    .list_vaults()?
                    .into_iter()
                    .map(|v| {
                        let name = v.clone().into_bytes();
                        let i = self.control_ino(ino, &name, Control::PointsOf(v));
                        (name, i)
                    })
                    .collect(),
                Control::PointsOf(v) => self
                    .repo
                    .list_points(v)?
                    .into_iter()
                    .map(|p| {
                        let name = format!("{p}.json").into_bytes();
                        let i = self.control_ino(ino, &name, Control::PointJson(v.clone(), p));
                        (name, i)
                    })
                    .collect(),
                Control::VaultJson(_)
                | Control::PointJson(..)
                | Control::IncomingFile(_)
                | Control::TaskJson(_)
                | Control::Stats => return Err(FsError::NotDir),
            },
        })
    }
}
