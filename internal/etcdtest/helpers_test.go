package etcdtest_test

import (
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/flotilla/flotilla/internal/etcdtest"
)

func clientv3New(ep string) (*clientv3.Client, error) {
	return clientv3.New(etcdtest.ClientConfig([]string{ep}))
}
