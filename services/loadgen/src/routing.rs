//! Which edge a client lands on, as a load balancer would choose it:
//! org-affine (a hash of the org, as nginx's `hash $arg_org consistent`
//! does in `deploy/nginx/herald.conf`) or round-robin.
//!
//! nginx's consistent hash is a ketama ring of CRC32 points; here the org's
//! CRC32 modulo the number of edges is used. Both keep every user of an org
//! on one edge and spread orgs evenly; only which org lands where differs.
//! CRC32 (not FNV-1a, NATS's partition hash) keeps the edge of an org
//! independent of its partition.

/// How clients are spread over edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Every client of an org on the edge its org hashes to.
    OrgAffine,
    /// Clients spread evenly over the edges whatever their org, as
    /// round-robin spreads clients that arrive in no particular order: a
    /// hash of the client's number, so an org's users do not land together
    /// by accident of numbering (client i is in org i mod M).
    RoundRobin,
}

impl Routing {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Routing::OrgAffine => "org-affine",
            Routing::RoundRobin => "round-robin",
        }
    }

    /// The edge (of `edges`) client number `client`, of org `org`, lands on.
    pub fn edge(self, client: usize, org: &str, edges: usize) -> usize {
        let edges = edges.max(1);
        match self {
            Routing::OrgAffine => crc32(org.as_bytes()) as usize % edges,
            Routing::RoundRobin => crc32(&(client as u64).to_le_bytes()) as usize % edges,
        }
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and nginx's `ngx_crc32_long`).
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn affine_keeps_an_org_on_one_edge_and_spreads_orgs() {
        let orgs: Vec<String> = (0..3_000).map(|i| format!("load-o{i}")).collect();
        let mut per_edge = [0usize; 3];
        for org in &orgs {
            let e = Routing::OrgAffine.edge(0, org, 3);
            for client in 1..5 {
                assert_eq!(Routing::OrgAffine.edge(client, org, 3), e);
            }
            per_edge[e] += 1;
        }
        assert!(
            per_edge.iter().all(|&n| (900..=1_100).contains(&n)),
            "{per_edge:?}"
        );
        // Round-robin: 30 orgs × 5 users over 3 edges; numbering (i mod 30
        // is the org) must not put an org's users together.
        let mut rr = [0usize; 3];
        let mut orgs_on_every_edge = 0;
        for org in 0..30 {
            let edges: BTreeSet<usize> = (0..5)
                .map(|u| Routing::RoundRobin.edge(org + 30 * u, "x", 3))
                .collect();
            orgs_on_every_edge += usize::from(edges.len() > 1);
            for u in 0..5 {
                rr[Routing::RoundRobin.edge(org + 30 * u, "x", 3)] += 1;
            }
        }
        assert!(
            orgs_on_every_edge >= 25,
            "{orgs_on_every_edge} of 30 orgs on more than one edge"
        );
        assert!(rr.iter().all(|&n| (35..=65).contains(&n)), "{rr:?}");
        assert_eq!(Routing::OrgAffine.edge(0, "x", 0), 0);
    }
}
