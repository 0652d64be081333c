// The grpc-go baseline of the benchmark: helloworld.Greeter (the language of Function Compute's
// gRPC sample) and the standard health service, with nothing else, so `make bench` can compare the
// bootstrap with what a Go function would ship. bench/run.sh generates the helloworld package
// from proto/helloworld.proto with Debian's protoc plugins and builds this in GOPATH mode.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "benchgo/helloworld"
)

type greeter struct {
	pb.UnimplementedGreeterServer
}

// SayHello answers as the canonical example does, like the bootstrap's sample Greeter.
func (greeter) SayHello(_ context.Context, in *pb.HelloRequest) (*pb.HelloReply, error) {
	return &pb.HelloReply{Message: "Hello " + in.GetName()}, nil
}

func main() {
	port := flag.Int("port", 8089, "port to listen on")
	flag.Parse()
	lis, err := net.Listen("tcp", fmt.Sprintf(":%d", *port))
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	s := grpc.NewServer()
	pb.RegisterGreeterServer(s, greeter{})
	// health.NewServer reports the overall service "" as SERVING from the start.
	healthpb.RegisterHealthServer(s, health.NewServer())
	if err := s.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}
