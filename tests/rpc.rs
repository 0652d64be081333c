//! All four RPC kinds over a real connection with a tonic client, against the shipped database.

mod support;

use bootstrap::proto::helloworld::HelloRequest;
use bootstrap::proto::helloworld::greeter_client::GreeterClient;
use bootstrap::proto::routeguide::route_guide_client::RouteGuideClient;
use bootstrap::proto::routeguide::{Point, Rectangle, RouteNote};
use support::{TestServer, within};
use tonic::Code;

fn point(latitude: i32, longitude: i32) -> Point {
    Point {
        latitude,
        longitude,
    }
}

#[tokio::test]
async fn unary_say_hello() {
    let server = TestServer::serving().await;
    let mut greeter = GreeterClient::new(server.channel().await);
    let reply = greeter
        .say_hello(HelloRequest {
            name: "world".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "Hello world");
    server.stop().await;
}

#[tokio::test]
async fn unary_get_feature() {
    let server = TestServer::serving().await;
    let mut guide = RouteGuideClient::new(server.channel().await);
    let known = guide
        .get_feature(point(473124518, 85231907))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(known.name, "Larchwood Hill Lookout, Upper Fenn Trail");
    let unknown = guide.get_feature(point(1, -1)).await.unwrap().into_inner();
    assert_eq!(unknown.name, "");
    assert_eq!(unknown.location, Some(point(1, -1)));
    server.stop().await;
}

#[tokio::test]
async fn server_streaming_list_features() {
    let server = TestServer::serving().await;
    let mut guide = RouteGuideClient::new(server.channel().await);
    let mut stream = guide
        .list_features(Rectangle {
            lo: Some(point(473000000, 85000000)),
            hi: Some(point(474000000, 86000000)),
        })
        .await
        .unwrap()
        .into_inner();
    let mut features = Vec::new();
    while let Some(feature) = within("next feature", stream.message()).await.unwrap() {
        features.push(feature);
    }
    assert_eq!(features.len(), 9);
    assert_eq!(features.iter().filter(|f| f.name.is_empty()).count(), 2);

    let err = guide
        .list_features(Rectangle {
            lo: None,
            hi: Some(point(0, 0)),
        })
        .await;
    let code = match err {
        Err(status) => status.code(),
        Ok(response) => response.into_inner().message().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn client_streaming_record_route() {
    let server = TestServer::serving().await;
    let mut guide = RouteGuideClient::new(server.channel().await);
    let route = [
        point(473124518, 85231907),
        point(473387702, 85512466),
        point(473200000, 85300000),
        point(473501230, 85650871),
    ];
    let summary = guide
        .record_route(tokio_stream::iter(route))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.point_count, 4);
    assert_eq!(summary.feature_count, 2);
    assert_eq!(summary.distance, 10509);
    server.stop().await;
}

#[tokio::test]
async fn bidi_route_chat() {
    let server = TestServer::serving().await;
    let mut guide = RouteGuideClient::new(server.channel().await);
    let note = |lat, message: &str| RouteNote {
        location: Some(point(lat, 7)),
        message: message.into(),
    };
    let notes = [
        note(1, "a1"),
        note(2, "b1"),
        note(1, "a2"),
        note(2, "b2"),
        note(1, "a3"),
    ];
    let mut replies = guide
        .route_chat(tokio_stream::iter(notes))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(n) = within("next note", replies.message()).await.unwrap() {
        got.push(n.message);
    }
    assert_eq!(got, ["a1", "b1", "a1", "a2"]);
    server.stop().await;
}

#[tokio::test]
async fn unknown_method_is_unimplemented_and_server_serves_on() {
    let server = TestServer::serving().await;
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<HelloRequest, HelloRequest>::default();
    let err = grpc
        .unary(
            tonic::Request::new(HelloRequest::default()),
            http::uri::PathAndQuery::from_static("/helloworld.Greeter/Nope"),
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let reply = GreeterClient::new(channel)
        .say_hello(HelloRequest { name: "x".into() })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "Hello x");
    server.stop().await;
}
