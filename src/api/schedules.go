package api

import "github.com/gin-gonic/gin"

func (s *Server) listSchedules(c *gin.Context)   { notYet(c) }
func (s *Server) createSchedules(c *gin.Context) { notYet(c) }
func (s *Server) getSchedule(c *gin.Context)     { notYet(c) }
func (s *Server) updateSchedule(c *gin.Context)  { notYet(c) }
func (s *Server) cancelSchedule(c *gin.Context)  { notYet(c) }
