module gotypes

go 1.19

require github.com/Azure/go-amqp v1.0.5
