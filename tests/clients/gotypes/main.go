// Receive one message with github.com/Azure/go-amqp and print, for each body value and header,
// the Go type it arrived as (tests/integration/test_consumer_types.py).
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/Azure/go-amqp"
)

func describe(v any) [2]string {
	switch x := v.(type) {
	case []byte:
		return [2]string{fmt.Sprintf("%T", v), hex.EncodeToString(x)}
	case time.Time:
		return [2]string{fmt.Sprintf("%T", v), x.UTC().Format(time.RFC3339Nano)}
	}
	return [2]string{fmt.Sprintf("%T", v), fmt.Sprint(v)}
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := fmt.Sprintf("amqp://%s:%s", os.Getenv("KOJI_BUS_HOST"), os.Getenv("KOJI_BUS_PORT"))
	conn, err := amqp.Dial(ctx, url, &amqp.ConnOptions{
		SASLType: amqp.SASLTypePlain(os.Getenv("KOJI_BUS_USER"), os.Getenv("KOJI_BUS_PASSWORD"))})
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	session, err := conn.NewSession(ctx, nil)
	if err != nil {
		panic(err)
	}
	receiver, err := session.NewReceiver(ctx, os.Getenv("KOJI_BUS_SOURCE"), nil)
	if err != nil {
		panic(err)
	}
	msg, err := receiver.Receive(ctx, nil)
	if err != nil {
		panic(err)
	}
	out := map[string][2]string{}
	switch body := msg.Value.(type) {
	case map[string]any:
		for k, v := range body {
			out["body."+k] = describe(v)
		}
	case map[any]any:
		for k, v := range body {
			out[fmt.Sprint("body.", k)] = describe(v)
		}
	default:
		out["body"] = describe(msg.Value)
	}
	for k, v := range msg.ApplicationProperties {
		out["header."+k] = describe(v)
	}
	out["message-id"] = describe(msg.Properties.MessageID)
	out["creation-time"] = describe(*msg.Properties.CreationTime)
	if err := receiver.AcceptMessage(ctx, msg); err != nil {
		panic(err)
	}
	text, _ := json.Marshal(out)
	fmt.Println(string(text))
}
