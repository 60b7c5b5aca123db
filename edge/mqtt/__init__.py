"""The MQTT and Home Assistant link: the device's voice.

One worker (`link.MqttLink`, started last) connects to the broker (`connection`), announces
the device to Home Assistant (`discovery`), keeps availability and states current
(`node_states`, `alerts`), forwards bus events through a durable outbox that loses nothing
(`outbox`), and takes commands from Home Assistant (`remote_commands`). In the simulator
without a configured broker it starts an embedded one (`embedded_broker`). Topic names live
in `topics`, the `[mqtt]` config section in `settings`, its Prometheus metrics in `metrics`.
"""
