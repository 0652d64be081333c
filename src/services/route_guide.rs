//! The sample `routeguide.RouteGuide` service, one method of each RPC kind.
//!
//! It is wire-compatible with gRPC's canonical `route_guide` example, so stock clients exercise the
//! bootstrap's unary, server-streaming, client-streaming and bidirectional paths against it. The
//! feature database is `route_guide_db.json` next to this file, compiled into the binary so a
//! function instance needs no data file at run time.
//!
//! Response streams are produced inline (stream combinators polled by the response body) rather
//! than by a spawned task feeding a channel. The bootstrap cancels a call (deadline, drain) by
//! dropping the response body: with inline streams that drop also stops the work, and a panic
//! while producing an item surfaces in the body poll, where the server catches it. A spawned task
//! would outlive the call and panic out of sight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::routeguide::route_guide_server::RouteGuide as RouteGuideService;
use crate::proto::routeguide::{Feature, Point, Rectangle, RouteNote, RouteSummary};

/// The shipped feature database, in the canonical example's JSON shape.
const FEATURE_DB: &str = include_str!("route_guide_db.json");

/// Mean Earth radius used by the canonical servers, so distances agree with theirs.
const EARTH_RADIUS_M: f64 = 6_371_000.0;

/// Coordinates travel as degrees multiplied by 10^7.
const E7: f64 = 1e7;

/// Notes received by `RouteChat`, by (latitude, longitude), oldest first.
type NoteBook = Mutex<HashMap<(i32, i32), Vec<RouteNote>>>;

/// The route guide: an immutable feature database plus the notes left through `RouteChat`.
///
/// Cloning is cheap and clones share both the database and the notes, so every call served by
/// one `RouteGuide` (and its clones) sees the same chat history.
#[derive(Debug, Clone)]
pub struct RouteGuide {
    db: Arc<FeatureDb>,
    notes: Arc<NoteBook>,
}

/// The features in database order, plus an index so point lookups do not scan the list.
#[derive(Debug)]
struct FeatureDb {
    features: Vec<Feature>,
    by_location: HashMap<(i32, i32), usize>,
}

impl RouteGuide {
    /// A route guide serving the feature database shipped in the binary, with no notes yet.
    ///
    /// # Panics
    ///
    /// Only if the compiled-in `route_guide_db.json` is malformed, which a unit test rules out.
    #[must_use]
    pub fn new() -> Self {
        let features = parse_features(FEATURE_DB).expect(
            "src/services/route_guide_db.json is compiled in and must be a JSON array of \
             {\"location\":{\"latitude\":i32,\"longitude\":i32},\"name\":string}",
        );
        Self::with_features(features)
    }

    /// A route guide serving `features` (in that order) instead of the shipped database.
    ///
    /// When several features share a location, lookups by point return the first of them.
    #[must_use]
    pub fn with_features(features: Vec<Feature>) -> Self {
        let mut by_location = HashMap::with_capacity(features.len());
        for (index, feature) in features.iter().enumerate() {
            if let Some(point) = feature.location {
                by_location.entry(key(point)).or_insert(index);
            }
        }
        Self {
            db: Arc::new(FeatureDb {
                features,
                by_location,
            }),
            notes: Arc::default(),
        }
    }

    /// The features this guide serves, in database order.
    #[must_use]
    pub fn features(&self) -> &[Feature] {
        &self.db.features
    }

    fn feature_at(&self, point: Point) -> Option<&Feature> {
        self.db
            .by_location
            .get(&key(point))
            .and_then(|&index| self.db.features.get(index))
    }

    /// Consumes a route and summarises it. Generic over the stream so tests can drive it without
    /// building a `tonic::Streaming`.
    async fn summarise_route<S>(&self, mut points: S) -> Result<RouteSummary, Status>
    where
        S: Stream<Item = Result<Point, Status>> + Unpin,
    {
        let mut tally = RouteTally::default();
        let mut started = None;
        while let Some(point) = points.next().await {
            // A broken inbound stream (client reset, decode error) fails the call with its status
            // rather than summarising a truncated route as if it were complete.
            let point = point?;
            started.get_or_insert_with(Instant::now);
            let named = self.feature_at(point).is_some_and(|f| !f.name.is_empty());
            tally.add(point, named);
        }
        let elapsed = started.map(|start| start.elapsed()).unwrap_or_default();
        Ok(tally.summary(elapsed))
    }
}

impl Default for RouteGuide {
    /// Same as [`RouteGuide::new`].
    fn default() -> Self {
        Self::new()
    }
}

#[tonic::async_trait]
impl RouteGuideService for RouteGuide {
    async fn get_feature(&self, request: Request<Point>) -> Result<Response<Feature>, Status> {
        let point = request.into_inner();
        let feature = self.feature_at(point).cloned().unwrap_or(Feature {
            name: String::new(),
            location: Some(point),
        });
        Ok(Response::new(feature))
    }

    type ListFeaturesStream = BoxStream<'static, Result<Feature, Status>>;

    async fn list_features(
        &self,
        request: Request<Rectangle>,
    ) -> Result<Response<Self::ListFeaturesStream>, Status> {
        let bounds = Bounds::from_rectangle(&request.into_inner())?;
        let db = Arc::clone(&self.db);
        // Lazy: each feature is tested when the body asks for the next item, so a dropped body
        // stops the scan.
        let matches = (0..db.features.len()).filter_map(move |index| {
            let feature = db.features.get(index)?;
            let inside = feature.location.is_some_and(|p| bounds.contains(p));
            inside.then(|| Ok(feature.clone()))
        });
        Ok(Response::new(stream::iter(matches).boxed()))
    }

    async fn record_route(
        &self,
        request: Request<Streaming<Point>>,
    ) -> Result<Response<RouteSummary>, Status> {
        let summary = self.summarise_route(request.into_inner()).await?;
        Ok(Response::new(summary))
    }

    type RouteChatStream = BoxStream<'static, Result<RouteNote, Status>>;

    async fn route_chat(
        &self,
        request: Request<Streaming<RouteNote>>,
    ) -> Result<Response<Self::RouteChatStream>, Status> {
        Ok(Response::new(chat(
            Arc::clone(&self.notes),
            request.into_inner(),
        )))
    }
}

/// The JSON shape of one database entry; the generated `Feature` has no serde support.
#[derive(Deserialize)]
struct DbFeature {
    location: DbPoint,
    name: String,
}

/// The JSON shape of a database location.
#[derive(Deserialize)]
struct DbPoint {
    latitude: i32,
    longitude: i32,
}

fn parse_features(json: &str) -> Result<Vec<Feature>, serde_json::Error> {
    let rows: Vec<DbFeature> = serde_json::from_str(json)?;
    Ok(rows
        .into_iter()
        .map(|row| Feature {
            name: row.name,
            location: Some(Point {
                latitude: row.location.latitude,
                longitude: row.location.longitude,
            }),
        })
        .collect())
}

fn key(point: Point) -> (i32, i32) {
    (point.latitude, point.longitude)
}

/// A rectangle with its corners normalised: clients may send any two opposite corners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    min_lat: i32,
    max_lat: i32,
    min_lon: i32,
    max_lon: i32,
}

impl Bounds {
    fn from_rectangle(rect: &Rectangle) -> Result<Self, Status> {
        let (Some(lo), Some(hi)) = (rect.lo, rect.hi) else {
            return Err(Status::invalid_argument(
                "rectangle needs both corners: lo and hi must be set",
            ));
        };
        Ok(Self {
            min_lat: lo.latitude.min(hi.latitude),
            max_lat: lo.latitude.max(hi.latitude),
            min_lon: lo.longitude.min(hi.longitude),
            max_lon: lo.longitude.max(hi.longitude),
        })
    }

    /// Inclusive on every edge, as the canonical servers are.
    fn contains(&self, point: Point) -> bool {
        (self.min_lat..=self.max_lat).contains(&point.latitude)
            && (self.min_lon..=self.max_lon).contains(&point.longitude)
    }
}

/// Great-circle (haversine) distance in metres between two E7 points.
fn distance_m(from: Point, to: Point) -> f64 {
    let lat1 = (f64::from(from.latitude) / E7).to_radians();
    let lat2 = (f64::from(to.latitude) / E7).to_radians();
    let dlat = lat2 - lat1;
    let dlon = (f64::from(to.longitude) / E7 - f64::from(from.longitude) / E7).to_radians();
    let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    let c = 2.0 * a.sqrt().atan2((1.0 - a).sqrt());
    EARTH_RADIUS_M * c
}

/// The running totals of `RecordRoute`.
#[derive(Debug, Default)]
struct RouteTally {
    point_count: i32,
    feature_count: i32,
    distance_m: f64,
    previous: Option<Point>,
}

impl RouteTally {
    fn add(&mut self, point: Point, at_named_feature: bool) {
        // Saturating: a client streaming billions of points must not overflow a debug build.
        self.point_count = self.point_count.saturating_add(1);
        if at_named_feature {
            self.feature_count = self.feature_count.saturating_add(1);
        }
        if let Some(previous) = self.previous {
            self.distance_m += distance_m(previous, point);
        }
        self.previous = Some(point);
    }

    // The one lossy cast is deliberate: see the comment on `distance`.
    #[allow(clippy::cast_possible_truncation)]
    fn summary(&self, elapsed: Duration) -> RouteSummary {
        RouteSummary {
            point_count: self.point_count,
            feature_count: self.feature_count,
            // Summing in f64 and rounding once avoids the per-segment truncation drift of the
            // Go example; `as` saturates, which is the right answer for absurd routes.
            distance: self.distance_m.round() as i32,
            elapsed_time: i32::try_from(elapsed.as_secs()).unwrap_or(i32::MAX),
        }
    }
}

/// Stores `note` and returns the notes received at its location before it, oldest first.
///
/// A note without a location is filed at (0, 0), the proto3 default, as the canonical servers do.
fn record_note(notes: &NoteBook, note: RouteNote) -> Vec<RouteNote> {
    let location = note.location.unwrap_or_default();
    // The map is only ever pushed to while locked, so a panic elsewhere cannot leave it
    // half-updated: recovering from poisoning keeps the chat working for everyone else.
    let mut book = notes.lock().unwrap_or_else(PoisonError::into_inner);
    let earlier = book.entry(key(location)).or_default();
    let previous = earlier.clone();
    earlier.push(note);
    previous
}

/// The `RouteChat` response stream: for each inbound note, the notes previously left at its
/// location. Ends when the inbound stream ends, or with the inbound stream's error status.
fn chat<S>(notes: Arc<NoteBook>, inbound: S) -> BoxStream<'static, Result<RouteNote, Status>>
where
    S: Stream<Item = Result<RouteNote, Status>> + Send + Unpin + 'static,
{
    struct Chat<S> {
        inbound: S,
        notes: Arc<NoteBook>,
        pending: std::vec::IntoIter<RouteNote>,
    }

    let start = Chat {
        inbound,
        notes,
        pending: Vec::new().into_iter(),
    };
    // The state becomes `None` after an inbound error so the stream ends right after reporting it.
    stream::unfold(Some(start), |state| async move {
        let mut chat = state?;
        loop {
            if let Some(note) = chat.pending.next() {
                return Some((Ok(note), Some(chat)));
            }
            match chat.inbound.next().await? {
                Ok(note) => chat.pending = record_note(&chat.notes, note).into_iter(),
                Err(status) => return Some((Err(status), None)),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn point(latitude: i32, longitude: i32) -> Point {
        Point {
            latitude,
            longitude,
        }
    }

    fn note(latitude: i32, longitude: i32, message: &str) -> RouteNote {
        RouteNote {
            location: Some(point(latitude, longitude)),
            message: message.to_owned(),
        }
    }

    fn messages(notes: &[RouteNote]) -> Vec<&str> {
        notes.iter().map(|n| n.message.as_str()).collect()
    }

    /// The rectangle documented for tests: 9 features of the shipped database lie inside it
    /// (7 named, 2 unnamed), two of them exactly on its edge.
    fn test_rectangle() -> Rectangle {
        Rectangle {
            lo: Some(point(473_000_000, 85_000_000)),
            hi: Some(point(474_000_000, 86_000_000)),
        }
    }

    async fn list(guide: &RouteGuide, rect: Rectangle) -> Result<Vec<Feature>, Status> {
        let stream = guide.list_features(Request::new(rect)).await?.into_inner();
        stream.collect::<Vec<_>>().await.into_iter().collect()
    }

    #[test]
    fn shipped_database_parses() {
        let features = parse_features(FEATURE_DB).expect("route_guide_db.json must parse");
        assert!(features.len() >= 20, "database unexpectedly small");
        assert!(features.iter().any(|f| f.name.is_empty()));
        assert!(features.iter().any(|f| !f.name.is_empty()));
        let guide = RouteGuide::new();
        assert_eq!(
            guide.db.by_location.len(),
            features.len(),
            "locations must be unique so GetFeature is unambiguous"
        );
    }

    #[tokio::test]
    async fn get_feature_returns_the_named_feature_at_that_point() {
        let guide = RouteGuide::new();
        let found = guide
            .get_feature(Request::new(point(473_124_518, 85_231_907)))
            .await
            .expect("get_feature")
            .into_inner();
        assert_eq!(found.name, "Larchwood Hill Lookout, Upper Fenn Trail");
        assert_eq!(found.location, Some(point(473_124_518, 85_231_907)));
    }

    #[tokio::test]
    async fn get_feature_unknown_point_is_unnamed_at_that_point() {
        let guide = RouteGuide::new();
        let unknown = point(1, -1);
        let found = guide
            .get_feature(Request::new(unknown))
            .await
            .expect("get_feature")
            .into_inner();
        assert_eq!(found.name, "");
        assert_eq!(found.location, Some(unknown));
    }

    #[tokio::test]
    async fn list_features_returns_the_rectangle_in_database_order() {
        let guide = RouteGuide::new();
        let found = list(&guide, test_rectangle()).await.expect("list_features");
        let expected: Vec<Feature> = guide.features()[..9].to_vec();
        assert_eq!(found, expected);
        assert_eq!(found.iter().filter(|f| f.name.is_empty()).count(), 2);
    }

    #[tokio::test]
    async fn list_features_accepts_any_two_opposite_corners() {
        let guide = RouteGuide::new();
        let rect = test_rectangle();
        let swapped = Rectangle {
            lo: rect.hi,
            hi: rect.lo,
        };
        let (lo, hi) = (rect.lo.unwrap_or_default(), rect.hi.unwrap_or_default());
        let other_diagonal = Rectangle {
            lo: Some(point(lo.latitude, hi.longitude)),
            hi: Some(point(hi.latitude, lo.longitude)),
        };
        let expected = list(&guide, rect).await.expect("list_features");
        assert_eq!(list(&guide, swapped).await.expect("swapped"), expected);
        assert_eq!(
            list(&guide, other_diagonal).await.expect("other diagonal"),
            expected
        );
    }

    #[tokio::test]
    async fn list_features_without_a_corner_is_invalid() {
        let guide = RouteGuide::new();
        for rect in [
            Rectangle {
                lo: None,
                ..test_rectangle()
            },
            Rectangle {
                hi: None,
                ..test_rectangle()
            },
            Rectangle::default(),
        ] {
            let err = guide
                .list_features(Request::new(rect))
                .await
                .err()
                .expect("missing corner must be rejected");
            assert_eq!(err.code(), Code::InvalidArgument);
        }
    }

    #[tokio::test]
    async fn list_features_of_an_empty_area_is_an_empty_stream() {
        let guide = RouteGuide::new();
        let rect = Rectangle {
            lo: Some(point(-10, -10)),
            hi: Some(point(10, 10)),
        };
        assert!(list(&guide, rect).await.expect("list_features").is_empty());
    }

    #[test]
    fn bounds_are_inclusive_on_every_edge() {
        let bounds = Bounds::from_rectangle(&test_rectangle()).expect("both corners");
        assert!(bounds.contains(point(473_000_000, 85_000_000)));
        assert!(bounds.contains(point(474_000_000, 86_000_000)));
        assert!(bounds.contains(point(473_500_000, 85_500_000)));
        assert!(!bounds.contains(point(472_999_999, 85_500_000)));
        assert!(!bounds.contains(point(474_000_001, 85_500_000)));
        assert!(!bounds.contains(point(473_500_000, 84_999_999)));
        assert!(!bounds.contains(point(473_500_000, 86_000_001)));
    }

    #[test]
    fn distance_matches_the_haversine_formula() {
        let a = point(473_000_000, 85_000_000);
        assert!(distance_m(a, a).abs() < 1e-9);
        // One degree along a meridian is R * pi / 180.
        let one_degree = distance_m(point(0, 0), point(10_000_000, 0));
        assert!((one_degree - 111_194.93).abs() < 0.01, "{one_degree}");
        // One degree of longitude on the equator is the same arc.
        let east = distance_m(point(0, 0), point(0, 10_000_000));
        assert!((east - one_degree).abs() < 1e-6);
        let b = point(474_000_000, 86_000_000);
        assert!((distance_m(a, b) - distance_m(b, a)).abs() < 1e-6);
        // Antipodes: half the circumference, with no NaN from rounding above 1.
        let half = distance_m(point(0, 0), point(0, 1_800_000_000));
        assert!((half - EARTH_RADIUS_M * std::f64::consts::PI).abs() < 1e-3);
    }

    #[test]
    fn tally_counts_points_features_and_distance() {
        let mut tally = RouteTally::default();
        tally.add(point(0, 0), true);
        tally.add(point(10_000_000, 0), false);
        tally.add(point(10_000_000, 0), true);
        let summary = tally.summary(Duration::from_millis(2_900));
        assert_eq!(summary.point_count, 3);
        assert_eq!(summary.feature_count, 2);
        assert_eq!(summary.distance, 111_195);
        assert_eq!(summary.elapsed_time, 2, "whole seconds, truncated");
    }

    #[tokio::test]
    async fn record_route_counts_only_named_features() {
        let guide = RouteGuide::new();
        let route = [
            point(473_124_518, 85_231_907), // named
            point(473_387_702, 85_512_466), // named
            point(473_200_000, 85_300_000), // nothing there
            point(473_501_230, 85_650_871), // unnamed feature
        ];
        let summary = guide
            .summarise_route(stream::iter(route.map(Ok)))
            .await
            .expect("summary");
        assert_eq!(summary.point_count, 4);
        assert_eq!(summary.feature_count, 2);
        let expected: f64 = route.windows(2).map(|w| distance_m(w[0], w[1])).sum();
        assert!((f64::from(summary.distance) - expected).abs() <= 0.5);
        assert_eq!(summary.elapsed_time, 0);
    }

    #[tokio::test]
    async fn record_route_of_nothing_is_all_zero() {
        let guide = RouteGuide::new();
        let summary = guide
            .summarise_route(stream::iter(Vec::<Result<Point, Status>>::new()))
            .await
            .expect("summary");
        assert_eq!(summary, RouteSummary::default());
    }

    #[tokio::test(start_paused = true)]
    async fn record_route_times_from_the_first_point_to_the_end() {
        let guide = RouteGuide::new();
        // Three points, 2.5 s apart, then 1 s before the stream ends: 6 s from the first point.
        let slow = stream::unfold(0, |sent| async move {
            if sent < 3 {
                if sent > 0 {
                    tokio::time::sleep(Duration::from_millis(2_500)).await;
                }
                Some((Ok(point(sent, sent)), sent + 1))
            } else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                None
            }
        });
        // The wait before the first point must not count.
        tokio::time::sleep(Duration::from_secs(30)).await;
        let summary = guide
            .summarise_route(Box::pin(slow))
            .await
            .expect("summary");
        assert_eq!(summary.point_count, 3);
        assert_eq!(summary.elapsed_time, 6);
    }

    #[tokio::test]
    async fn record_route_fails_with_the_inbound_error() {
        let guide = RouteGuide::new();
        let inbound = stream::iter(vec![
            Ok(point(1, 1)),
            Err(Status::cancelled("client went away")),
            Ok(point(2, 2)),
        ]);
        let err = guide
            .summarise_route(inbound)
            .await
            .expect_err("a broken route is not summarised");
        assert_eq!(err.code(), Code::Cancelled);
    }

    #[test]
    fn record_note_returns_only_earlier_notes_at_that_location() {
        let book = NoteBook::default();
        assert!(record_note(&book, note(1, 1, "a1")).is_empty());
        assert!(record_note(&book, note(2, 2, "b1")).is_empty());
        assert_eq!(messages(&record_note(&book, note(1, 1, "a2"))), ["a1"]);
        assert_eq!(
            messages(&record_note(&book, note(1, 1, "a3"))),
            ["a1", "a2"]
        );
        assert_eq!(messages(&record_note(&book, note(2, 2, "b2"))), ["b1"]);
        // No location means (0, 0).
        let nowhere = RouteNote {
            location: None,
            message: "n".to_owned(),
        };
        assert!(record_note(&book, nowhere).is_empty());
        assert_eq!(messages(&record_note(&book, note(0, 0, "o"))), ["n"]);
    }

    #[tokio::test]
    async fn chat_echoes_earlier_notes_and_shares_them_across_calls() {
        let guide = RouteGuide::new();
        let first = chat(
            Arc::clone(&guide.notes),
            stream::iter(
                [
                    note(1, 1, "a1"),
                    note(2, 2, "b1"),
                    note(1, 1, "a2"),
                    note(2, 2, "b2"),
                    note(1, 1, "a3"),
                ]
                .map(Ok),
            ),
        );
        let replies: Vec<RouteNote> = first
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("no errors");
        assert_eq!(messages(&replies), ["a1", "b1", "a1", "a2"]);

        // A later call on a clone sees the history left by the first.
        let clone = guide.clone();
        let second = chat(
            Arc::clone(&clone.notes),
            stream::iter([Ok(note(2, 2, "b3"))]),
        );
        let replies: Vec<RouteNote> = second
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("no errors");
        assert_eq!(messages(&replies), ["b1", "b2"]);
    }

    #[tokio::test]
    async fn chat_ends_with_the_inbound_error() {
        let guide = RouteGuide::new();
        let inbound = stream::iter(vec![
            Ok(note(5, 5, "x1")),
            Ok(note(5, 5, "x2")),
            Err(Status::cancelled("client reset")),
            Ok(note(5, 5, "never read")),
        ]);
        let items: Vec<Result<RouteNote, Status>> =
            chat(Arc::clone(&guide.notes), inbound).collect().await;
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].as_ref().map(|n| n.message.as_str()).ok(),
            Some("x1")
        );
        assert_eq!(
            items[1].as_ref().err().map(Status::code),
            Some(Code::Cancelled)
        );
    }

    #[tokio::test]
    async fn separate_guides_do_not_share_notes() {
        let one = RouteGuide::new();
        let other = RouteGuide::new();
        assert!(record_note(&one.notes, note(3, 3, "mine")).is_empty());
        assert!(record_note(&other.notes, note(3, 3, "theirs")).is_empty());
    }

    #[test]
    fn with_features_keeps_order_and_first_duplicate_wins() {
        let guide = RouteGuide::with_features(vec![
            Feature {
                name: "first".to_owned(),
                location: Some(point(1, 1)),
            },
            Feature {
                name: "no location".to_owned(),
                location: None,
            },
            Feature {
                name: "second".to_owned(),
                location: Some(point(1, 1)),
            },
        ]);
        assert_eq!(guide.features().len(), 3);
        assert_eq!(
            guide.feature_at(point(1, 1)).map(|f| f.name.as_str()),
            Some("first")
        );
    }
}
