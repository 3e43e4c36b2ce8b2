//! C2SP `tlog-tiles` arithmetic (pure): tile paths (`x001/x234/067`, partial
//! tiles `.p/W`), which stored hashes a tile holds, perfect-subtree hashes
//! from tiles ([`TileSet`]), and how the tree grows ([`Frontier`]).
//!
//! Storage: a tile at level `L` holds the hashes of the tree nodes of height
//! `8·L`. Level 0 (leaf hashes) is derived from the entries (the record
//! hashes); levels 1 and up are stored hash by hash, keyed by level and index
//! (a tile is a range of 256 of them), each written once, when the 256 hashes
//! below it are complete. So nothing is ever rewritten, partial tiles included.

use super::merkle::{fold_range, leaf_hash, perfect_root, Hash, Node, NodeSource};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Hashes per full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree heights per tile level.
pub const TILE_HEIGHT: u32 = 8;
/// Highest tile level `tlog-tiles` allows.
pub const MAX_LEVEL: u8 = 63;

/// What a tile request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileKind {
    /// A hash tile at this level.
    Hashes(u8),
    /// An entry bundle.
    Entries,
}

/// A tile request: kind, tile index and width (256 for a full tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRef {
    pub kind: TileKind,
    pub index: u64,
    pub width: u64,
}

impl TileRef {
    /// The tile level (entries are level 0).
    pub fn level(&self) -> u8 {
        match self.kind {
            TileKind::Hashes(l) => l,
            TileKind::Entries => 0,
        }
    }

    /// Indexes, at its level, of the hashes (or entries) the tile holds.
    pub fn hash_range(&self) -> (u64, u64) {
        let start = self.index * TILE_WIDTH;
        (start, start + self.width)
    }

    /// The path after `tile/`, e.g. `1/x001/234.p/5` or `entries/000`.
    pub fn path(&self) -> String {
        let head = match self.kind {
            TileKind::Hashes(l) => l.to_string(),
            TileKind::Entries => "entries".to_owned(),
        };
        let mut p = format!("{head}/{}", index_path(self.index));
        if self.width < TILE_WIDTH {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }
}

/// `N` in the zero-padded 3-digit path form: `1234067` → `x001/x234/067`.
pub fn index_path(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// Parses what follows `tile/` (only the canonical form is accepted, so one
/// tile has one path). `None` for anything malformed.
pub fn parse_tile_path(path: &str) -> Option<TileRef> {
    let (head, rest) = path.split_once('/')?;
    let kind = if head == "entries" {
        TileKind::Entries
    } else {
        let level: u8 = parse_decimal(head)?.try_into().ok()?;
        if level > MAX_LEVEL {
            return None;
        }
        TileKind::Hashes(level)
    };
    let (index_part, width) = match rest.split_once(".p/") {
        Some((i, w)) => {
            let w = parse_decimal(w)?;
            if !(1..TILE_WIDTH).contains(&w) {
                return None;
            }
            (i, w)
        }
        None => (rest, TILE_WIDTH),
    };
    let parts: Vec<&str> = index_part.split('/').collect();
    let mut index: u64 = 0;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let digits = if last { *part } else { part.strip_prefix('x')? };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index
            .checked_mul(1000)?
            .checked_add(digits.parse::<u64>().ok()?)?;
    }
    if index_path(index) != index_part {
        return None; // leading x000 groups: not canonical
    }
    Some(TileRef { kind, index, width })
}

/// A decimal without sign or leading zeros.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// How many hashes tile level `level` holds for a tree of `size` leaves.
pub fn level_count(size: u64, level: u8) -> u64 {
    let shift = u32::from(level) * TILE_HEIGHT;
    if shift >= 64 {
        0
    } else {
        size >> shift
    }
}

/// Whether the tree of `size` holds the whole of `tile`.
pub fn tile_exists(size: u64, tile: &TileRef) -> bool {
    level_count(size, tile.level()) >= tile.hash_range().1
}

/// One tile's hashes as stored, from the tile's first on (record hashes at
/// level 0); a tile read once stays true, as stored hashes are never rewritten.
pub type StoredTile = Arc<Vec<Hash>>;

/// Stored hashes by tile level and index, fetched ahead (hash by hash, or
/// tiles at a time); answers perfect subtree hashes from them (a node of
/// height `8L + r` hashes `2^r` consecutive level-`L` hashes).
#[derive(Debug, Default, Clone)]
pub struct TileSet {
    /// Tree hashes (leaf hashes at level 0) by level and index.
    hashes: HashMap<(u8, u64), Hash>,
    /// Tiles by level and tile index: the hashes stored from the tile's first
    /// on (record hashes at level 0, their leaf hashes made when asked).
    tiles: HashMap<(u8, u64), StoredTile>,
}

impl TileSet {
    pub fn insert(&mut self, level: u8, index: u64, hash: Hash) {
        self.hashes.insert((level, index), hash);
    }

    /// Adds tile `tile` of `level`: its stored hashes from its first on
    /// (record hashes at level 0).
    pub fn insert_tile(&mut self, level: u8, tile: u64, stored: StoredTile) {
        self.tiles.insert((level, tile), stored);
    }

    fn stored(&self, level: u8, index: u64) -> Option<&Hash> {
        self.tiles
            .get(&(level, index / TILE_WIDTH))
            .and_then(|t| t.get((index % TILE_WIDTH) as usize))
    }

    fn get(&self, level: u8, index: u64) -> Option<Hash> {
        match self.stored(level, index) {
            Some(h) if level == 0 => Some(leaf_hash(h)),
            Some(h) => Some(*h),
            None => self.hashes.get(&(level, index)).copied(),
        }
    }

    /// The record hash of leaf `index`, from a loaded level-0 tile.
    pub fn record(&self, index: u64) -> Option<Hash> {
        self.stored(0, index).copied()
    }

    /// The level-`L` hash ranges a set of nodes needs: `(level, from, to)`.
    pub fn needs(nodes: &[Node]) -> Vec<(u8, u64, u64)> {
        nodes
            .iter()
            .map(|n| {
                let level = (n.height / TILE_HEIGHT) as u8;
                let r = n.height % TILE_HEIGHT;
                (level, n.index << r, (n.index + 1) << r)
            })
            .collect()
    }

    /// The tiles `(level, tile index)` holding what a set of nodes needs, each
    /// with how many of its hashes, from its first, are needed.
    pub fn tiles_needed(nodes: &[Node]) -> BTreeMap<(u8, u64), u64> {
        let mut out: BTreeMap<(u8, u64), u64> = BTreeMap::new();
        for (level, from, to) in Self::needs(nodes) {
            for tile in from / TILE_WIDTH..=(to - 1) / TILE_WIDTH {
                let width = (to - tile * TILE_WIDTH).min(TILE_WIDTH);
                let w = out.entry((level, tile)).or_default();
                *w = (*w).max(width);
            }
        }
        out
    }
}

/// A level-`L` hash the set was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("tile hash at level {0} index {1} was not loaded")]
pub struct NotLoaded(pub u8, pub u64);

impl NodeSource for TileSet {
    type Error = NotLoaded;
    fn node(&self, node: Node) -> Result<Hash, NotLoaded> {
        let level = (node.height / TILE_HEIGHT) as u8;
        let r = node.height % TILE_HEIGHT;
        let from = node.index << r;
        let row = (from..from + (1u64 << r))
            .map(|i| self.get(level, i).ok_or(NotLoaded(level, i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(perfect_root(&row))
    }
}

/// One stored hash at tile level ≥ 1: the node of height `8·level`, `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewNode {
    pub level: u8,
    pub index: u64,
    pub hash: Hash,
}

/// The right edge of the tree: for each tile level, the hashes of its last,
/// partial tile. Enough to append leaves and to compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `partial[L]`: the level-`L` hashes of the last, partial tile.
    partial: Vec<Vec<Hash>>,
}

/// Which level-`L` hashes a frontier of `size` is made of: `(level, from, to)`.
pub fn frontier_ranges(size: u64) -> Vec<(u8, u64, u64)> {
    let mut out = Vec::new();
    let mut level = 0u8;
    loop {
        let count = level_count(size, level);
        if count == 0 {
            break;
        }
        let from = count - count % TILE_WIDTH;
        if from < count {
            out.push((level, from, count));
        }
        level += 1;
    }
    out
}

/// Why loaded hashes do not make a frontier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stored tree is incomplete at tile level {0}")]
pub struct Incomplete(pub u8);

impl Frontier {
    /// The frontier of a tree of `size` from the hashes of
    /// [`frontier_ranges`] (`(level, index) → hash`).
    pub fn load(size: u64, loaded: &HashMap<(u8, u64), Hash>) -> Result<Self, Incomplete> {
        let mut partial: Vec<Vec<Hash>> = Vec::new();
        for (level, from, to) in frontier_ranges(size) {
            while partial.len() <= level as usize {
                partial.push(Vec::new());
            }
            for i in from..to {
                let h = loaded.get(&(level, i)).ok_or(Incomplete(level))?;
                partial[level as usize].push(*h);
            }
        }
        Ok(Self { size, partial })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one leaf (its record hash); returns the level ≥ 1 hashes it completed.
    pub fn push(&mut self, record_hash: &Hash, out: &mut Vec<NewNode>) {
        let mut hash = leaf_hash(record_hash);
        let mut level = 0usize;
        loop {
            if self.partial.len() <= level {
                self.partial.push(Vec::new());
            }
            self.partial[level].push(hash);
            if self.partial[level].len() < TILE_WIDTH as usize {
                break;
            }
            hash = perfect_root(&self.partial[level]);
            self.partial[level].clear();
            level += 1;
            let index = level_count(self.size + 1, level as u8) - 1;
            out.push(NewNode {
                level: level as u8,
                index,
                hash,
            });
        }
        self.size += 1;
    }

    /// The root hash of the tree.
    pub fn root(&self) -> Hash {
        // Perfect pieces left to right: the highest level covers the leftmost leaves.
        let mut pieces = Vec::new();
        for row in self.partial.iter().rev() {
            let mut at = 0usize;
            while at < row.len() {
                let len = 1usize << (usize::BITS - 1 - (row.len() - at).leading_zeros());
                pieces.push(perfect_root(&row[at..at + len]));
                at += len;
            }
        }
        fold_range(&pieces)
    }
}

#[cfg(test)]
mod tests {
    use super::super::merkle::{inclusion_proof, perfect_nodes, root, MemTree};
    use super::*;

    #[test]
    fn paths_in_the_spec_form() {
        assert_eq!(index_path(1234067), "x001/x234/067");
        assert_eq!(index_path(0), "000");
        assert_eq!(index_path(1000), "x001/000");
        let t = parse_tile_path("1/x001/x234/067.p/5").unwrap();
        assert_eq!(
            t,
            TileRef {
                kind: TileKind::Hashes(1),
                index: 1234067,
                width: 5
            }
        );
        assert_eq!(t.path(), "1/x001/x234/067.p/5");
        assert_eq!(
            parse_tile_path("entries/000").unwrap().kind,
            TileKind::Entries
        );
        for bad in [
            "1/x000/067",
            "01/000",
            "64/000",
            "0/67",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/05",
            "0/x001",
            "0/001/002",
            "0/",
            "x/000",
            "0/000.p/",
            "0/-01",
        ] {
            assert_eq!(parse_tile_path(bad), None, "{bad}");
        }
    }

    /// Growing a frontier leaf by leaf, reloading it from the stored hashes at
    /// random points, gives the same roots as the reference tree, and the
    /// stored hashes answer every proof.
    #[test]
    fn frontier_grows_like_the_reference_tree() {
        let mut stored: HashMap<(u8, u64), Hash> = HashMap::new();
        let mut reference = MemTree::new();
        let mut f = Frontier::default();
        let n = 70_000u64;
        for i in 0..n {
            let rh = super::super::merkle::sha256(&i.to_be_bytes());
            let mut new = Vec::new();
            f.push(&rh, &mut new);
            stored.insert((0, i), leaf_hash(&rh));
            for nn in new {
                assert!(stored.insert((nn.level, nn.index), nn.hash).is_none());
            }
            reference.push(leaf_hash(&rh));
            if i % 9_973 == 0 || i < 600 && i % 7 == 0 {
                assert_eq!(f.root(), root(&reference, i + 1).unwrap(), "size {}", i + 1);
                f = Frontier::load(i + 1, &stored).unwrap();
                assert_eq!(
                    f.root(),
                    root(&reference, i + 1).unwrap(),
                    "reloaded {}",
                    i + 1
                );
            }
        }
        // The spec's example: size 70,000 has 273 full level-0 tiles + 112, …
        assert_eq!(
            frontier_ranges(70_000),
            vec![(0, 69_888, 70_000), (1, 256, 273), (2, 0, 1)]
        );
        let mut tiles = TileSet::default();
        for ((l, i), h) in &stored {
            tiles.insert(*l, *i, *h);
        }
        for size in [1u64, 255, 256, 257, 65_536, 65_537, 69_999, 70_000] {
            assert_eq!(root(&tiles, size).unwrap(), root(&reference, size).unwrap());
            for m in [0, size / 3, size - 1] {
                assert_eq!(
                    inclusion_proof(&tiles, m, size).unwrap(),
                    inclusion_proof(&reference, m, size).unwrap()
                );
            }
        }
        let needs = TileSet::needs(&perfect_nodes(0, 70_000));
        assert!(needs.iter().all(|(l, _, _)| *l <= 2));

        // The same hashes given a tile at a time (level 0: the record hashes)
        // answer the same proofs, and the record hashes.
        let mut whole = TileSet::default();
        let wanted = TileSet::tiles_needed(&perfect_nodes(0, n));
        assert_eq!(wanted.get(&(2, 0)), Some(&1));
        assert_eq!(wanted.get(&(1, 1)), Some(&17));
        assert_eq!(wanted.get(&(0, 273)), Some(&112));
        for level in 0..=2u8 {
            for tile in 0..=level_count(n, level) / TILE_WIDTH {
                let from = tile * TILE_WIDTH;
                let hashes: Vec<Hash> = (from..from + TILE_WIDTH)
                    .map_while(|i| match level {
                        0 => (i < n).then(|| super::super::merkle::sha256(&i.to_be_bytes())),
                        _ => stored.get(&(level, i)).copied(),
                    })
                    .collect();
                whole.insert_tile(level, tile, Arc::new(hashes));
            }
        }
        assert_eq!(
            whole.record(69_999),
            Some(super::super::merkle::sha256(&69_999u64.to_be_bytes()))
        );
        for size in [1u64, 256, 257, 65_537, 70_000] {
            assert_eq!(root(&whole, size).unwrap(), root(&reference, size).unwrap());
            for m in [0, size / 3, size - 1] {
                assert_eq!(
                    inclusion_proof(&whole, m, size).unwrap(),
                    inclusion_proof(&reference, m, size).unwrap()
                );
            }
        }
    }
}
